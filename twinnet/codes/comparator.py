"""The Hamming comparator: embeddings compared by the Hamming distance of their binary codes.

``hamming`` owns its codes: a projection ``sign((x − centre) · W)`` of the model's embeddings to
``bits`` bits (see :mod:`twinnet.codes.projection`), kept in the comparator's weights, so a saved
model carries it and a gallery built from the model hashes templates and queries the same way.
Its native value is a distance, an integer from 0 to ``bits``; thresholds follow (a calibrated
threshold ``t`` decides exactly as the integer ``floor(t)``, :meth:`HammingDistance.integer_threshold`).

Galleries search it with FAISS binary indexes (:mod:`twinnet.gallery.binary_index`): its index
plan has metric ``hamming``, and its transform packs the codes, 16 bytes a template at 128 bits.

Training (``method: learned``; the model in train mode): the sign has no gradient, so the
comparator gives the relaxed distance ``(bits − tanh(h_a)·tanh(h_b)) / 2`` with
``h = (x − centre) · W``, which any pair or triplet loss trains; the ``hashing`` loss
(:mod:`twinnet.losses.quantization`) adds the quantisation term that pushes ``tanh(h)`` to ±1.
In eval mode, and in every gallery, it is the exact Hamming distance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from twinnet.codes.bits import check_bits, pack_bits
from twinnet.codes.projection import METHODS, itq_projection, sign_projection, simhash_projection
from twinnet.compare import COMPARATORS, DISTANCE, Comparator, IndexPlan


def _negated(similarity: np.ndarray) -> np.ndarray:
    return -np.asarray(similarity)


@COMPARATORS.register("hamming")
class HammingDistance(Comparator):
    """Hamming distance between ``bits``-bit codes of the embeddings (a distance in 0…bits).

    ``method``: ``simhash`` (random hyperplanes, ready at once), ``sign`` (each coordinate's sign
    about the training mean: ``bits`` = the embedding size), ``itq`` (call :meth:`fit` on
    training embeddings) or ``learned`` (``W`` trained with the model; starts as SimHash, or as
    ITQ after :meth:`fit`). ``dim`` is the embedding size (given by the model; left out, the
    projection is made at the first call). ``rescore_with``: the float comparator the codes stand
    in for (``euclidean``, ``cosine``), for galleries that re-score candidates in float.
    """

    orientation = DISTANCE

    def __init__(self, dim: int | None = None, bits: int = 128, method: str = "simhash", seed: int = 0,
                 rescore_with: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.bits = check_bits(bits)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        self.method, self.seed = method, int(seed)
        #: the registry name of the (parameter-free) float comparator whose embeddings these codes
        #: hash: a gallery that re-scores its Hamming candidates exactly uses it
        self.rescore_with = rescore_with
        self.weight: nn.Parameter | None = None
        self.register_buffer("centre", None)
        if dim is not None:
            self._make(int(dim))

    def _make(self, dim: int) -> None:
        if self.method == "sign":
            centre, w = sign_projection(dim, self.bits)
        else:
            centre, w = simhash_projection(dim, self.bits, self.seed)
        self.weight = nn.Parameter(torch.from_numpy(w), requires_grad=self.method == "learned")
        self.centre = torch.from_numpy(centre)

    def _ready(self, x: torch.Tensor) -> None:
        if self.weight is None:
            self._make(int(x.shape[-1]))
            assert self.weight is not None
            self.to(device=x.device, dtype=x.dtype)

    @property
    def dim(self) -> int | None:
        return None if self.weight is None else int(self.weight.shape[0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bits={self.bits}, method={self.method!r}"

    # -- codes --------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, embeddings: np.ndarray | torch.Tensor, iterations: int = 50) -> HammingDistance:
        """Fit the projection on training embeddings: ITQ for ``itq`` and ``learned`` (a warm
        start); for ``simhash`` only the centre (the hyperplanes pass through the embeddings' mean:
        embeddings in a narrow cone would otherwise all get the same code). Returns self."""
        x = np.asarray(embeddings.detach().cpu() if isinstance(embeddings, torch.Tensor) else embeddings, np.float32)
        if self.weight is None:
            self._make(x.shape[1])
        assert self.weight is not None and self.centre is not None
        if self.method in ("simhash", "sign"):
            self.centre.copy_(torch.from_numpy(x.mean(0)))
            return self
        centre, w = itq_projection(x, self.bits, iterations, self.seed)
        self.weight.copy_(torch.from_numpy(w))
        self.centre.copy_(torch.from_numpy(centre))
        return self

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``(x − centre) · W``: the real values whose signs are the code bits."""
        self._ready(x)
        assert self.weight is not None and self.centre is not None
        return (x - self.centre) @ self.weight

    def relaxed(self, x: torch.Tensor) -> torch.Tensor:
        """``tanh`` of the projection: the differentiable stand-in for the ±1 code."""
        return torch.tanh(self.project(x))

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        """The code as ±1 values (a projection of exactly 0 counts as 1)."""
        return torch.where(self.project(x) >= 0, 1.0, -1.0).to(x.dtype)

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.relaxed(x) if self.training else self.hard(x)

    @torch.no_grad()
    def encode(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Packed codes ``(n, bits // 8)`` uint8 of float embeddings."""
        x = torch.from_numpy(np.array(embeddings, dtype=np.float32))  # a copy: stored rows may be read-only
        if self.weight is not None:
            x = x.to(device=self.weight.device, dtype=self.weight.dtype)
        return pack_bits((self.project(x) >= 0).cpu().numpy())

    # -- comparison ---------------------------------------------------------------------------------

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.bits - (self._codes(a) * self._codes(b)).sum(-1))

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.bits - self._codes(a) @ self._codes(b).T)

    def index_plan(self, dim: int) -> IndexPlan:
        return IndexPlan("hamming", self.bits, self.encode, _negated)

    @staticmethod
    def integer_threshold(threshold: float) -> int:
        """The integer threshold that decides exactly as ``threshold`` on Hamming distances
        (``distance <= t`` ⇔ ``distance <= floor(t)`` for integer distances)."""
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, not {threshold}")
        return math.floor(threshold + 1e-9)

    def quantization_penalty(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Mean of ``(1 − |tanh(h)|)²``: zero when every relaxed bit is at ±1 (the quantisation
        term of deep supervised hashing)."""
        return (1.0 - self.relaxed(embeddings).abs()).pow(2).mean()

    def bit_balance_penalty(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Mean over bits of the squared batch mean of ``tanh(h)``: zero when each bit is on for
        half the batch (bits that are always on or off carry nothing)."""
        return self.relaxed(embeddings).mean(0).pow(2).mean()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if self.weight is None and isinstance(weight, torch.Tensor):
            self._make(int(weight.shape[0]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
