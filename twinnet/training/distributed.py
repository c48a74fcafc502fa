"""Training on several processes (``torchrun``): the process group, who is who, and the global batch.

``torchrun --nproc_per_node=N -m twinnet train …`` starts N copies of the command; each finds its
rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``…)
and :func:`setup` joins the process group: NCCL when the processes train on CUDA devices (one device
per process, ``cuda:LOCAL_RANK``), gloo on CPU. Without those variables (a plain ``twinnet train``)
nothing here does anything: a world of one process, and every helper is the identity.

What the rest of training asks:

- :class:`World` — this process's rank, the number of processes, its device, whether it is the
  main process (rank 0: it validates, calibrates, writes checkpoints and saves the model) and its
  share of a global batch (:meth:`World.shard`; a P×K batch is shared by classes,
  :meth:`twinnet.data.samplers.PKBatchSampler.shard`).
- :func:`gather` — the rows of every process's tensors, concatenated in rank order, *with their
  gradients*: the loss seam (:mod:`twinnet.losses.base`) gathers the batch embeddings so in-batch
  mining and ranking losses see the global batch, exactly as one process with the whole batch would.
- :func:`broadcast` — rank 0's decision (stop early, the time budget is spent) to all; no pickles.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from twinnet.errors import ConfigError, TrainingError
from twinnet.runtime import pick_device

__all__ = ["World", "broadcast", "gather", "gather_ids", "launched", "lost_contact", "reduce_sum", "setup", "teardown"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a world of one when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> World:
        """The world of the initialised process group, else a world of one."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, calibrates, checkpoints, logs and saves the model."""
        return self.rank == 0

    @property
    def stream(self) -> tuple[int, ...]:
        """What to mix into a per-process random stream (augmentation, dropout): nothing for one
        process, so a plain run's streams are those it always had; ``(size, rank)`` otherwise."""
        return (self.size, self.rank) if self.distributed else ()

    def device(self, requested: str = "auto") -> torch.device:
        """The device this process trains on: ``requested`` (``auto``: CUDA when present), and with
        several processes on CUDA, the one of this process's local rank."""
        device = pick_device(requested)
        if device.type == "cuda" and self.distributed and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, n: int) -> np.ndarray:
        """This process's rows of a global batch of ``n`` rows: every ``size``-th row from ``rank``,
        so the processes' rows are disjoint and together the whole batch."""
        return np.arange(self.rank, n, self.size) if self.distributed else np.arange(n)

    def require(self, units: int, what: str) -> None:
        """Refuse a global batch of fewer ``units`` than processes (a process would get nothing)."""
        if units < self.size:
            raise ConfigError(f"{what} is {units}, fewer than the {self.size} training processes: every process "
                              "needs a share of each batch; raise it or start fewer processes")  # fmt: skip


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(requested_device: str = "auto", timeout_s: float = 1800.0) -> World:
    """Join the process group when launched as one of several processes (NCCL for CUDA, gloo on
    CPU) and return this process's :class:`World`; a world of one otherwise. ``timeout_s`` bounds
    every wait on the other processes, so a lost process ends the run instead of hanging it."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return World.current()
    if not dist.is_available():
        raise TrainingError("this torch build has no torch.distributed: train with one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = World(0, int(os.environ["WORLD_SIZE"]), local_rank).device(requested_device)
    backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as err:
        raise TrainingError(f"cannot join the {backend} process group (rank {os.environ.get('RANK')} of "
                            f"{os.environ.get('WORLD_SIZE')}, MASTER_ADDR {os.environ.get('MASTER_ADDR')}): "
                            f"{_first_line(err)}") from None  # fmt: skip
    return World.current()


def teardown(finished: bool = False) -> None:
    """Leave the process group (when this process is in one). ``finished``: the run ended well on
    this process, so wait for the others first — a process that leaves while rank 0's store and
    gloo threads still talk to it can abort at exit ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            with contextlib.suppress(RuntimeError):  # another process is gone: leave anyway
                dist.barrier()
        dist.destroy_process_group()


def lost_contact(err: RuntimeError) -> TrainingError | None:
    """What to raise instead of ``err`` when it is a collective that failed because another process
    is gone or too slow (a TrainingError saying so and how to go on); ``None`` for any other error."""
    world = World.current()
    if not world.distributed:
        return None
    text = str(err)
    if not isinstance(err, dist.DistError) and not any(word in text for word in _LOST_CONTACT):
        return None
    return TrainingError(f"rank {world.rank} of {world.size}: lost contact with the other training processes "
                         f"({_first_line(err)}); when one was stopped, rerun the same command with --resume "
                         "to continue from the last checkpoint")  # fmt: skip


_LOST_CONTACT = ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe", "timed out", "Timed out")
"""What the messages of a failed collective hold (gloo's and NCCL's are not all DistErrors)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# -- the global batch -------------------------------------------------------------------------------


def _sizes(n: int, device: torch.device) -> list[int]:
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    parts = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def _all_gather_rows(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Every process's rows of ``x`` (possibly of different counts) in rank order."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along rows whose backward sends each process the gradient of its own rows,
    summed over the processes (every process computes the loss of the whole batch)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.dtype = sizes, dist.get_rank(), x.dtype
        # float32 on the wire: gloo has no bfloat16, and the sum of gradients stays exact enough
        return _all_gather_rows(x.float(), sizes).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.float().contiguous().clone()
        dist.all_reduce(total)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]].to(ctx.dtype), None


def gather(*tensors: torch.Tensor | None) -> tuple[Any, ...]:
    """The global batch: each tensor's rows from every process, concatenated in rank order (rows
    of process 0 first). Tensors that require gradients keep them: the backward pass gives each
    process the gradient of the global loss with respect to its own rows (summed over the
    processes, each of which computes the same global loss), so after DistributedDataParallel
    averages the parameters' gradients they equal those of one process with the whole batch.
    ``None`` stays ``None``; in a world of one every tensor is returned as it is."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    present = [t for t in tensors if t is not None]
    if not present:
        return tensors
    sizes = _sizes(len(present[0]), present[0].device)
    out: list[torch.Tensor | None] = []
    for t in tensors:
        if t is None:
            out.append(None)
        elif t.requires_grad:
            out.append(_GatherWithGrad.apply(t, sizes))
        elif t.dtype == torch.bool:
            out.append(_all_gather_rows(t.to(torch.uint8), sizes).bool())
        else:
            out.append(_all_gather_rows(t.detach(), sizes))
    return tuple(out)


def gather_ids(ids: torch.Tensor | None) -> torch.Tensor | None:
    """Ids that number rows within one process's batch (the instance of each augmented view) as
    ids of the global batch: offset by the rows of the processes before, then gathered."""
    if ids is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    sizes = _sizes(len(ids), ids.device)
    return _all_gather_rows(ids + sum(sizes[: dist.get_rank()]), sizes)


def reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """The sums over the processes of a few numbers (the epoch's loss and item count)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(value: int, device: torch.device) -> int:
    """Rank 0's ``value`` (a decision: go on, stop early, the time budget is spent) on every process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    try:
        dist.broadcast(t, src=0)
    except RuntimeError as err:
        if (lost := lost_contact(err)) is None:
            raise
        raise lost from None
    return int(t.item())
