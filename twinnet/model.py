"""Twin networks: one encoder shared by both inputs, or two related encoders (half-twin)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.calibrate import Calibration
from twinnet.compare import Comparator, build_comparator
from twinnet.config import ComponentConfig, ModelConfig
from twinnet.encoders import build_encoder
from twinnet.encoders.registry import infer_output_dim
from twinnet.errors import ConfigError


class _TwinBase(nn.Module):
    """What twins and half-twins share: the comparator, normalisation, and what travels with a
    trained model (its config, calibration, metrics and weight fingerprint)."""

    def _init_head(
        self, encoder: nn.Module, comparator: Comparator | str, normalize: bool, config: ModelConfig | None
    ) -> None:
        if isinstance(comparator, str):
            dim = getattr(encoder, "output_dim", None)
            if not isinstance(dim, int):
                raise ConfigError(
                    "cannot infer the embedding size of this encoder: give it an `output_dim` "
                    "attribute or pass a Comparator instance"
                )
            comparator = build_comparator(comparator, {}, dim)
        self.comparator = comparator
        self.normalize = normalize
        self.config = config
        self.calibration: Calibration | None = None
        self.metrics: dict = {}
        self.fingerprint: str | None = None

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1) if self.normalize else z

    @property
    def is_distance(self) -> bool:
        return self.comparator.is_distance


class TwinNetwork(_TwinBase):
    """A twin (Siamese) network: ``score = comparator(f(x₁), f(x₂))`` with one encoder ``f``.

    Both inputs go through the *same* module object, so the branches share every parameter and
    every gradient step changes them identically. Embeddings are L2-normalised when
    ``normalize=True``.

    Example::

        >>> import torch, twinnet
        >>> net = twinnet.TwinNetwork(twinnet.encoders.MLPEncoder(in_features=64), "euclidean")
        >>> net(torch.randn(8, 64), torch.randn(8, 64)).shape
        torch.Size([8])

    Args:
        encoder: any module mapping a batch of inputs to ``(batch, dim)``.
        comparator: a :class:`~twinnet.compare.Comparator` or a registered name
            (``euclidean``, ``squared_euclidean``, ``cosine``, ``weighted_l1``, ``mahalanobis``, ``mlp``).
        normalize: L2-normalise embeddings.
        config: the :class:`~twinnet.config.ModelConfig` the network was built from, kept so
            that :func:`twinnet.save` can rebuild it; ``None`` for hand-built networks.
    """

    def __init__(
        self,
        encoder: nn.Module,
        comparator: Comparator | str = "euclidean",
        normalize: bool = False,
        *,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self._init_head(encoder, comparator, normalize, config)

    # Both ``embed_a`` and ``embed_b`` exist so protocols treat twins and half-twins alike.
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(self.encoder(x))

    embed_a = embed
    embed_b = embed

    def forward(self, x1: torch.Tensor | list[str], x2: torch.Tensor | list[str]) -> torch.Tensor:
        """Native comparator values (distance or probability of "same") for row pairs."""
        if isinstance(x1, list) and isinstance(x2, list):  # texts: one tokenized batch for both
            z = self.embed(x1 + x2)
            return self.comparator(z[: len(x1)], z[len(x1) :])
        if x1.shape[1:] == x2.shape[1:]:
            # One encoder pass over both halves: faster, and BatchNorm sees one batch.
            z = self.embed(torch.cat([x1, x2]))
            z1, z2 = z[: len(x1)], z[len(x1) :]
        else:
            z1, z2 = self.embed(x1), self.embed(x2)
        return self.comparator(z1, z2)


class HalfTwinNetwork(_TwinBase):
    """Two encoders ``f`` (first input) and ``g`` (second input) for inputs of different kinds,
    compared in one embedding space, optionally sharing named sub-modules.

    ``share=["features"]`` makes ``g.features`` *the same module object* as ``f.features``
    (their shapes must agree), so those layers are trained by both branches.
    """

    def __init__(
        self,
        encoder_a: nn.Module,
        encoder_b: nn.Module,
        comparator: Comparator | str = "euclidean",
        normalize: bool = False,
        share: list[str] | tuple[str, ...] = (),
        *,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        for name in share:
            _share_submodule(encoder_a, encoder_b, name)
        self.encoder_a = encoder_a
        self.encoder_b = encoder_b
        self.share = list(share)
        self._init_head(encoder_a, comparator, normalize, config)

    def embed_a(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(self.encoder_a(x))

    def embed_b(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(self.encoder_b(x))

    embed = embed_a

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        return self.comparator(self.embed_a(x_a), self.embed_b(x_b))


def _share_submodule(a: nn.Module, b: nn.Module, name: str) -> None:
    try:
        part_a = a.get_submodule(name)
        part_b = b.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"model.share: both encoders need a sub-module named {name!r}") from None
    shapes_a = {k: v.shape for k, v in part_a.state_dict().items()}
    shapes_b = {k: v.shape for k, v in part_b.state_dict().items()}
    if shapes_a != shapes_b:
        raise ConfigError(f"model.share: sub-module {name!r} differs in shape between the two encoders")
    parent_name, _, child = name.rpartition(".")
    parent = b.get_submodule(parent_name) if parent_name else b
    setattr(parent, child, part_a)


AnyTwin = TwinNetwork | HalfTwinNetwork


def encoders_by_role(model: AnyTwin) -> dict[str, nn.Module]:
    """The model's encoders under their config names (``encoder``, and ``encoder_b`` for half-twins)."""
    if isinstance(model, HalfTwinNetwork):
        return {"encoder": model.encoder_a, "encoder_b": model.encoder_b}
    return {"encoder": model.encoder}


def _encoder(
    spec: ComponentConfig, input_spec: Any, assets: Path | None, texts: Sequence[str] | None
) -> tuple[nn.Module, int]:
    args = input_spec.encoder_args()
    if assets is not None and assets.is_dir():
        args["assets"] = assets
    if texts is not None:
        args["fit_texts"] = texts
    enc = build_encoder(spec.name, spec.params, args)
    dim = infer_output_dim(enc, torch.zeros(2, *input_spec.example_shape()))
    return enc, dim


def build_model(
    config: ModelConfig, *, assets: str | Path | None = None, texts: Sequence[str] | None = None
) -> AnyTwin:
    """Build a twin (or half-twin, when ``encoder_b`` is set) network from its config.

    ``texts`` are training texts, for encoders that build a vocabulary from them (``small_text``);
    ``assets`` is a saved model's asset folder (what :func:`twinnet.load` passes).
    """
    root = Path(assets) if assets is not None else None
    encoder, dim = _encoder(config.encoder, config.input, root / "encoder" if root else None, texts)
    if config.encoder_b is None:
        if config.share:
            raise ConfigError("model.share: only meaningful for a half-twin (set model.encoder_b)")
        comparator = build_comparator(config.comparator.name, config.comparator.params, dim)
        return TwinNetwork(encoder, comparator, config.normalize, config=config)
    encoder_b, dim_b = _encoder(
        config.encoder_b, config.input_b or config.input, root / "encoder_b" if root else None, texts
    )
    if dim_b != dim:
        raise ConfigError(f"model.encoder_b: embedding size {dim_b} differs from model.encoder's {dim}")
    comparator = build_comparator(config.comparator.name, config.comparator.params, dim)
    return HalfTwinNetwork(encoder, encoder_b, comparator, config.normalize, config.share, config=config)
