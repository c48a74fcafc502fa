"""What the label-free losses share: two views of each item, an optional head, a momentum tower.

A :class:`ViewsLoss` trains from the ``views`` batch plan (:class:`~twinnet.training.plans.ViewsPlan`):
each batch is ``n`` items seen twice, ``view_a[i]`` and ``view_b[i]`` two augmentations of item
``i``. "Same" means *the same item*; every other item of the batch is "different" (for the
contrastive objectives) or is not looked at (the non-contrastive ones: SimSiam, BYOL, Barlow Twins,
VICReg). Labels, where some items have them, are not used.

The heads the objectives need (a projector, a predictor) belong to the **loss**, not to the model:
they are trained with it and saved in checkpoints, and the saved model keeps only what inference
needs, the encoder. A momentum target (BYOL) is a :class:`MomentumTower`: a copy of the model's
side ``a`` (:meth:`~twinnet.model.TwinNetwork.side_module`, and the projector on it) whose weights
are an exponential moving average of the online ones; it never receives gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from twinnet.errors import ConfigError
from twinnet.losses.base import TwinLoss, number
from twinnet.training.batch import ViewsBatch
from twinnet.training.distributed import gather

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet
    from twinnet.model import AnyTwin


def mlp_head(in_dim: int, sizes: Sequence[int], *, last_norm: bool = False) -> nn.Module:
    """Linear → BatchNorm → ReLU for every size but the last, then a Linear to the last size
    (followed by a BatchNorm when ``last_norm``, as SimSiam's projector ends). ``sizes`` empty:
    the identity."""
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes):
        raise ValueError(f"head sizes must be positive integers, not {list(sizes)}")
    if not sizes:
        return nn.Identity()
    layers: list[nn.Module] = []
    dim = in_dim
    for size in sizes[:-1]:
        layers += [nn.Linear(dim, size, bias=False), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
        dim = size
    layers.append(nn.Linear(dim, sizes[-1], bias=not last_norm))
    if last_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)


def head_sizes(value: Any, name: str) -> list[int]:
    """A list of layer sizes (or ``[]``), or a ValueError naming ``name``."""
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a list of layer sizes, e.g. [256, 128], not {value!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"{name}: layer sizes must be positive, not {list(value)}")
    return list(value)


class MomentumTower(nn.Module):
    """A frozen copy of ``online`` whose weights follow it as an exponential moving average:
    ``θ_target ← m·θ_target + (1 − m)·θ_online`` after every step (:meth:`update`). Its parameters
    never require gradients (the optimiser never sees them); buffers (BatchNorm statistics) are
    copied. It is the second tower of a half-twin that exists only during training.

    Example::

        >>> import torch
        >>> online = torch.nn.Linear(2, 2)
        >>> tower = MomentumTower(online, momentum=0.5)
        >>> with torch.no_grad():
        ...     _ = online.weight.add_(1.0)
        >>> tower.update(online)
        >>> bool(torch.allclose(tower.target.weight, online.weight - 0.5))
        True
    """

    def __init__(self, online: nn.Module, momentum: float) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.target = copy.deepcopy(online)
        for p in self.target.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        m = self.momentum
        for target, source in zip(self.target.parameters(), online.parameters(), strict=True):
            target.mul_(m).add_(source.detach(), alpha=1.0 - m)
        for buffer, given in zip(self.target.buffers(), online.buffers(), strict=True):
            buffer.copy_(given)

    def forward(self, x: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.target(x)


class ViewsLoss(TwinLoss):
    """A loss on the embeddings of two views of the same items: ``forward(z_a, z_b)``, row ``i`` of
    each the same item (plan ``views``). ``compute`` embeds both views through the model's side ``a``
    (one pass for a twin), applies the loss's projector (``projector: [sizes]``; none by default),
    gathers the global batch over training processes and calls ``forward``.

    Example::

        >>> import torch
        >>> class Agree(ViewsLoss):      # a minimal views loss: the two views should agree
        ...     def forward(self, z_a, z_b):
        ...         return (z_a - z_b).pow(2).sum(1).mean()
        >>> Agree.batch_plan
        'views'
        >>> Agree()(torch.zeros(2, 3), torch.ones(2, 3))
        tensor(3.)
    """

    batch_plan: ClassVar[str] = "views"

    def __init__(self, projector: Sequence[int] | None = None) -> None:
        super().__init__()
        self.projector_sizes = head_sizes(projector, "projector")
        self.projector: nn.Module = nn.Identity()

    @property
    def output_dim(self) -> int | None:
        """The size of what ``forward`` receives: the projector's output (``None``: the embedding size)."""
        return self.projector_sizes[-1] if self.projector_sizes else None

    def prepare(self, items: ItemSet, embedding_dim: int) -> None:
        self.projector = mlp_head(embedding_dim, self.projector_sizes)

    def attach(self, model: AnyTwin) -> None:
        if model.is_half_twin:
            raise ConfigError(f"loss {type(self).__name__} compares two views of one kind of input through one "
                              "encoder: train a twin (no model.encoder_b)")  # fmt: skip

    def embed_views(self, model: AnyTwin, batch: ViewsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views through side a of the model (one pass for a twin) and the projector."""
        z_a, z_b = model.embed_pair(batch.view_a, batch.view_b)
        n = len(z_a)
        p = self.projector(torch.cat([z_a, z_b]))  # one batch for the head's BatchNorm
        return p[:n], p[n:]

    def compute(self, model: AnyTwin, batch: ViewsBatch) -> torch.Tensor:  # type: ignore[override]
        return self(*gather(*self.embed_views(model, batch)))


def momentum_value(value: Any) -> float:
    m = number(value, "momentum", minimum=0.0, strict=False)
    if m >= 1.0:
        raise ValueError(f"momentum must be below 1 (the target must follow the model), not {m:g}")
    return m
