"""Twin networks: one encoder shared by both inputs, or two related encoders (half-twin)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.calibrate import Calibration
from twinnet.compare import Comparator, Orientation, build_comparator
from twinnet.config import ComponentConfig, InputSpec, ModelConfig
from twinnet.encoders import build_encoder
from twinnet.encoders.registry import infer_output_dim
from twinnet.errors import ConfigError, DataError
from twinnet.whitening import Whitening, build_whitening

Side = Literal["a", "b"]
"""Which input of a pair: ``a`` (the first, a query) or ``b`` (the second, a document or template)."""

SIDES: tuple[Side, Side] = ("a", "b")


@runtime_checkable
class TakesTexts(Protocol):
    """An encoder of texts: it tokenizes a list of strings into the batch its ``forward`` takes."""

    def tokenize(self, texts: Sequence[str]) -> Any: ...


class _TwinBase(nn.Module):
    """What twins and half-twins share: the comparator, normalisation, what travels with a trained
    model (its config, calibration, metrics and weight fingerprint), and the one API that says
    which encoder and input specification each side of a pair uses.

    Callers never inspect a model's attributes to find its sides: they ask ``embed(x, side)``,
    ``encoder_for(side)``, ``input_spec(side)``, ``takes_texts(side)`` and ``is_half_twin``.
    Galleries hold side-``b`` embeddings (templates, documents) and are queried with side ``a``;
    for a twin both sides are the same encoder.
    """

    is_half_twin: ClassVar[bool] = False

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
        self.whitening: Whitening | None = None
        self.config = config
        self.calibration: Calibration | None = None
        self.metrics: dict = {}
        self.fingerprint: str | None = None
        self._embedding_dim: int | None = None

    # -- sides --------------------------------------------------------------------------------------

    def encoder_for(self, side: Side = "a") -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, x: Any, side: Side = "a") -> torch.Tensor:
        """Embeddings of a batch through the encoder of ``side`` (normalised if the model normalises,
        then whitened and normalised again if the model has a whitening)."""
        return _finish(self.encoder_for(side)(x), self.normalize, self.whitening)

    def set_whitening(self, whitening: Whitening | None) -> None:
        """Give the model a whitening of its embeddings (:mod:`twinnet.whitening`), applied after
        the encoder and normalisation (and followed by normalisation); a twin only."""
        if whitening is not None and self.is_half_twin:
            raise ConfigError("model.whitening: only for twins (a half-twin's two towers would need one each)")
        self.whitening = whitening

    def side_module(self, side: Side = "a") -> nn.Module:
        """The module that maps a batch of ``side`` to its embeddings (the side's encoder, then the
        model's normalisation): what a momentum target copies (a half-twin during training whose
        second tower is a moving average of this one, :class:`twinnet.losses.views.MomentumTower`).
        Its parameters are the model's own."""
        return _SideModule(self.encoder_for(side), self.normalize, self.whitening)

    def embed_a(self, x: Any) -> torch.Tensor:
        return self.embed(x, "a")

    def embed_b(self, x: Any) -> torch.Tensor:
        return self.embed(x, "b")

    def embed_pair(self, x_a: Any, x_b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of row pairs: ``x_a`` through side a, ``x_b`` through side b."""
        return self.embed(x_a, "a"), self.embed(x_b, "b")

    def forward(self, x_a: Any, x_b: Any) -> torch.Tensor:
        """Native comparator values (distance or probability of "same") for row pairs."""
        return self.comparator(*self.embed_pair(x_a, x_b))

    def input_spec(self, side: Side = "a") -> InputSpec:
        """What an input of ``side`` is (image size, text, …); hand-built models have none."""
        _check_side(side)
        if self.config is None:
            raise DataError("this model has no input specification (it was built without a config); pass tensors")
        if side == "b" and self.config.input_b is not None:
            return self.config.input_b
        return self.config.input

    def takes_texts(self, side: Side = "a") -> bool:
        return isinstance(self.encoder_for(side), TakesTexts)

    def tokenize(self, texts: Sequence[str], side: Side = "a") -> Any:
        encoder = self.encoder_for(side)
        if not isinstance(encoder, TakesTexts):
            raise DataError("this model does not take texts")
        return encoder.tokenize(texts)

    @property
    def device(self) -> torch.device:
        try:
            return next(self.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @property
    def embedding_dim(self) -> int:
        """The size of the embeddings (from the encoder's ``output_dim``, else one probe pass)."""
        if self._embedding_dim is None:
            dim = getattr(self.encoder_for("a"), "output_dim", None)
            if not isinstance(dim, int):
                with torch.no_grad():
                    was_training = self.training
                    self.eval()
                    probe = torch.zeros(1, *self.input_spec("a").example_shape(), device=self.device)
                    dim = int(self.embed(probe).shape[1])
                    self.train(was_training)
            self._embedding_dim = dim
        return self._embedding_dim

    @property
    def orientation(self) -> Orientation:
        return self.comparator.orientation

    @property
    def is_distance(self) -> bool:
        return self.comparator.is_distance


class _SideModule(nn.Module):
    """One side of a model as a module: its encoder, then L2 normalisation if the model normalises
    (and its whitening, if any, as :meth:`_TwinBase.embed`)."""

    def __init__(self, encoder: nn.Module, normalize: bool, whitening: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize
        self.whitening = whitening

    def forward(self, x: Any) -> torch.Tensor:
        return _finish(self.encoder(x), self.normalize, self.whitening)


def _finish(z: torch.Tensor, normalize: bool, whitening: nn.Module | None) -> torch.Tensor:
    """An encoder's output as the model's embedding: normalised (if the model normalises), then
    whitened and normalised again (if it has a whitening)."""
    z = F.normalize(z, dim=-1) if normalize else z
    if whitening is None:
        return z
    z = whitening(z)
    return F.normalize(z, dim=-1) if normalize else z


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'a' or 'b', not {side!r}")


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

    is_half_twin = False

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

    def encoder_for(self, side: Side = "a") -> nn.Module:
        _check_side(side)
        return self.encoder

    def embed_pair(self, x_a: Any, x_b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass over both halves where they fit in one batch: faster, and BatchNorm
        sees one batch."""
        if isinstance(x_a, list) and isinstance(x_b, list):  # texts: one tokenized batch for both
            z = self.embed(x_a + x_b)
        elif isinstance(x_a, torch.Tensor) and isinstance(x_b, torch.Tensor) and x_a.shape[1:] == x_b.shape[1:]:
            z = self.embed(torch.cat([x_a, x_b]))
        else:
            return self.embed(x_a), self.embed(x_b)
        return z[: len(x_a)], z[len(x_a) :]


class HalfTwinNetwork(_TwinBase):
    """Two encoders ``f`` (first input) and ``g`` (second input) for inputs of different kinds,
    compared in one embedding space, optionally sharing named sub-modules.

    ``share=["features"]`` makes ``g.features`` *the same module object* as ``f.features``
    (their shapes must agree), so those layers are trained by both branches.
    """

    is_half_twin = True

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

    def encoder_for(self, side: Side = "a") -> nn.Module:
        _check_side(side)
        return self.encoder_a if side == "a" else self.encoder_b


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
    if model.is_half_twin:
        return {"encoder": model.encoder_for("a"), "encoder_b": model.encoder_for("b")}
    return {"encoder": model.encoder_for("a")}


def replace_encoders(model: AnyTwin, by_role: dict[str, nn.Module]) -> None:
    """Put other modules in place of the model's encoders, by the names :func:`encoders_by_role`
    gives (an ONNX Runtime session in place of the torch encoder, :mod:`twinnet.onnx`); the rest of
    the model (comparator, normalisation, calibration) is kept."""
    roles = set(encoders_by_role(model))
    if set(by_role) != roles:
        raise ValueError(f"replace_encoders: expected the roles {sorted(roles)}, got {sorted(by_role)}")
    if isinstance(model, HalfTwinNetwork):
        model.encoder_a, model.encoder_b = by_role["encoder"], by_role["encoder_b"]
    else:
        model.encoder = by_role["encoder"]
    model._embedding_dim = None


def _encoder(
    spec: ComponentConfig, input_spec: Any, assets: Path | None, texts: Sequence[str] | None, field: str
) -> tuple[nn.Module, int]:
    args = input_spec.encoder_args()
    if assets is not None and assets.is_dir():
        args["assets"] = assets
    if texts is not None:
        args["fit_texts"] = texts
    try:
        enc = build_encoder(spec.name, spec.params, args, field=field)
        dim = infer_output_dim(enc, torch.zeros(2, *input_spec.example_shape()))
    except (RuntimeError, MemoryError) as err:
        # torch reports a layer too large to allocate (an embedding size of 10^11) or an input too
        # small for the encoder's kernels as a RuntimeError naming no config field
        raise ConfigError(
            f"{field}: cannot build encoder {spec.name!r} with these parameters ({_first_line(err)})"
        ) from None
    return enc, dim


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def build_model(
    config: ModelConfig, *, assets: str | Path | None = None, texts: Sequence[str] | None = None
) -> AnyTwin:
    """Build a twin (or half-twin, when ``encoder_b`` is set) network from its config.

    ``texts`` are training texts, for encoders that build a vocabulary from them (``small_text``);
    ``assets`` is a saved model's asset folder (what :func:`twinnet.load` passes).
    """
    root = Path(assets) if assets is not None else None
    encoder, dim = _encoder(config.encoder, config.input, root / "encoder" if root else None, texts, "model.encoder")
    if config.encoder_b is None:
        if config.share:
            raise ConfigError("model.share: only meaningful for a half-twin (set model.encoder_b)")
        comparator = _comparator(config, dim)
        return _with_whitening(TwinNetwork(encoder, comparator, config.normalize, config=config), config, dim)
    encoder_b, dim_b = _encoder(
        config.encoder_b,
        config.input_b or config.input,
        root / "encoder_b" if root else None,
        texts,
        "model.encoder_b",
    )
    if dim_b != dim:
        raise ConfigError(f"model.encoder_b: embedding size {dim_b} differs from model.encoder's {dim}")
    comparator = _comparator(config, dim)
    half = HalfTwinNetwork(encoder, encoder_b, comparator, config.normalize, config.share, config=config)
    return _with_whitening(half, config, dim)


def _with_whitening(model: AnyTwin, config: ModelConfig, dim: int) -> AnyTwin:
    if config.whitening is not None:
        model.set_whitening(build_whitening(config.whitening.name, config.whitening.params, dim))
    return model


def _comparator(config: ModelConfig, dim: int) -> Comparator:
    try:
        return build_comparator(config.comparator.name, config.comparator.params, dim)
    except (RuntimeError, MemoryError) as err:  # a learned metric of dim × dim weights that cannot be allocated
        raise ConfigError(f"model.comparator: cannot build {config.comparator.name!r} for {dim}-dimensional "
                          f"embeddings ({_first_line(err)})") from None  # fmt: skip
