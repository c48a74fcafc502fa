"""Which regions of each input drive a pair's score (``twinnet explain MODEL A B --out pair.png``).

Three saliency methods, each registered in :data:`SALIENCY` (``--method``):

- ``gradients`` (default; any differentiable encoder): integrated gradients of the pair's
  similarity, each input's path starting at the *other* input. Input ``b``'s attribution is
  ``(b − a) ⊙ mean over α of ∂s(a, a + α(b − a))/∂b``, which sums to ``s(a, b) − s(a, a)``: how much
  each pixel moves the score away from "identical" (and likewise for ``a``). Regions where the two
  inputs agree get nothing; where they differ, the map says how much that difference costs.
  Inputs of different shapes (a half-twin) start from zeros instead.
- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) of the similarity on the encoder's last feature map
  (the last module inside it with a 4-D output): channel weights are the spatially averaged
  gradients, the map the positive part of the weighted channels, upsampled to the input.
- ``rollout``: gradient-weighted attention rollout (Chefer et al. 2021) for attention encoders
  (:class:`twinnet.encoders.attention.HasAttention`): each block's attention, weighted by its gradient
  and averaged over heads, rolled out through the residual connections; the tokens' relevance is
  laid out on the token grid and upsampled.

Every map is a non-negative ``(H, W)`` array over the input's spatial grid (for sequences ``(1, T)``),
scaled so its maximum is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinnet.encoders.attention import AttentionBlock, HasAttention
from twinnet.errors import DataError
from twinnet.model import AnyTwin
from twinnet.registry import Registry

#: Saliency methods by name: a function ``(model, a, b, **options) -> (map_a, map_b)`` of two
#: batched inputs, giving two raw non-negative maps over their spatial grids.
SALIENCY: Registry[tuple[np.ndarray, np.ndarray]] = Registry("saliency method")


@dataclass
class PairSaliency:
    """Saliency maps of both inputs of a pair (each ``(H, W)``, maximum 1), its native value and the
    method that made them."""

    map_a: np.ndarray
    map_b: np.ndarray
    value: float
    method: str

    def peak(self, side: str = "b") -> tuple[int, int]:
        """Row and column of a map's maximum."""
        saliency = self.map_a if side == "a" else self.map_b
        row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        return int(row), int(col)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "value": self.value, "peak_a": self.peak("a"), "peak_b": self.peak("b")}


def _similarity(model: AnyTwin, a: torch.Tensor, b: torch.Tensor, last: str = "b") -> torch.Tensor:
    """The pair's similarity (larger = more alike), differentiable, one value per row; the side
    ``last`` is embedded last (so hooks and kept attention of a twin's one encoder hold its pass)."""
    if last == "a":
        z_b = model.embed(b, "b")
        z_a = model.embed(a, "a")
    else:
        z_a = model.embed(a, "a")
        z_b = model.embed(b, "b")
    return model.comparator.orientation.to_similarity(model.comparator(z_a, z_b))


def _spatial(attribution: torch.Tensor) -> np.ndarray:
    """``(1, C, *grid)`` attribution → the magnitude summed over channels, ``(H, W)``."""
    magnitude = attribution.detach().abs().sum(1)[0]
    if magnitude.dim() == 1:  # a sequence: one row over time
        magnitude = magnitude[None]
    return magnitude.float().cpu().numpy()


def pair_attributions(
    model: AnyTwin, a: torch.Tensor, b: torch.Tensor, steps: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed integrated-gradients attributions of two batched inputs (``(1, …)`` each), each
    input's path starting at the other (zeros when their shapes differ); each sums to
    ``s(a, b) − s(start)`` up to the ``steps``-point midpoint rule."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    same_shape = a.shape == b.shape
    alphas = (torch.arange(steps, dtype=a.dtype, device=a.device) + 0.5) / steps
    shape = (steps,) + (1,) * (a.dim() - 1)

    def path(moving: torch.Tensor, start: torch.Tensor, fixed: torch.Tensor, side: str) -> torch.Tensor:
        points = (start + alphas.view(shape) * (moving - start)).requires_grad_(True)
        other = fixed.expand(steps, *fixed.shape[1:])
        s = _similarity(model, other, points) if side == "b" else _similarity(model, points, other)
        (grad,) = torch.autograd.grad(s.sum(), points)
        return ((moving - start) * grad.mean(0, keepdim=True)).detach()

    start_a = b if same_shape else torch.zeros_like(a)
    start_b = a if same_shape else torch.zeros_like(b)
    return path(a, start_a, b, "a"), path(b, start_b, a, "b")


@SALIENCY.register("gradients")
def integrated_gradients(
    model: AnyTwin, a: torch.Tensor, b: torch.Tensor, steps: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of the similarity (:func:`pair_attributions`), magnitude per position."""
    attr_a, attr_b = pair_attributions(model, a, b, steps)
    return _spatial(attr_a), _spatial(attr_b)


def _last_feature_map(encoder: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last sub-module (in execution order) whose output is a 4-D feature map, outside any
    attention block (whose 4-D tensors are attention weights, not maps of the input)."""
    inside_attention = {
        id(m) for block in encoder.modules() if isinstance(block, AttentionBlock) for m in block.modules()
    }
    seen: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, _inp, out: seen.append(mod) if torch.is_tensor(out) and out.dim() == 4 else None
        )
        for m in encoder.modules()
        if m is not encoder and id(m) not in inside_attention
    ]
    try:
        with torch.no_grad():
            encoder(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise DataError("gradcam needs an encoder with a convolutional feature map; try --method gradients")
    return seen[-1]


class _KeepOutput:
    """A forward hook that keeps a module's last output, with its gradient."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        self.output = output


def _grad_cam_side(model: AnyTwin, a: torch.Tensor, b: torch.Tensor, side: str) -> np.ndarray:
    x = a if side == "a" else b
    layer = _last_feature_map(model.encoder_for(side), x)  # type: ignore[arg-type]
    keep = _KeepOutput()
    hook = layer.register_forward_hook(keep)
    try:
        s = _similarity(model, a, b, last=side)
    finally:
        hook.remove()
    s.sum().backward()
    features = keep.output
    assert features is not None and features.grad is not None
    weights = features.grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    model.zero_grad(set_to_none=True)
    return cam[0, 0].cpu().numpy()


@SALIENCY.register("gradcam")
def grad_cam(model: AnyTwin, a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the similarity on each side's last feature map, upsampled to the input."""
    return _grad_cam_side(model, a, b, "a"), _grad_cam_side(model, a, b, "b")


@SALIENCY.register("rollout")
def attention_rollout(model: AnyTwin, a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-weighted attention rollout of the similarity, for encoders that keep attention."""
    maps = []
    for side, x in (("a", a), ("b", b)):
        encoder = model.encoder_for(side)  # type: ignore[arg-type]
        if not isinstance(encoder, HasAttention):
            raise DataError("rollout needs an attention encoder (vit, trajectory_transformer); "
                            "try --method gradients or gradcam")  # fmt: skip
        encoder.keep_attention = True
        try:
            _similarity(model, a, b, last=side).sum().backward()
            attention = encoder.attention_maps()
            tokens = attention[0].shape[-1]
            rolled = torch.eye(tokens)
            for weights in attention:
                grad = weights.grad if weights.grad is not None else torch.ones_like(weights)
                relevance = (grad * weights).clamp_min(0).mean(1)[0].detach().cpu()  # heads averaged
                rolled = rolled + relevance @ rolled
            grid = encoder.token_grid()
        finally:
            encoder.keep_attention = False
            model.zero_grad(set_to_none=True)
        prefix = encoder.prefix_tokens
        scores = rolled[0, prefix:] if prefix else rolled.mean(0)
        cells = scores.reshape(1, 1, *grid)
        size = tuple(x.shape[-2:]) if x.dim() == 4 else (1, x.shape[-1])
        upsampled = F.interpolate(cells, size=size, mode="bilinear" if x.dim() == 4 else "nearest")
        maps.append(upsampled[0, 0].numpy())
    return maps[0], maps[1]


def _batch(x: torch.Tensor, model: AnyTwin) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise DataError("explain takes tensors (images, sequences, vectors), not texts")
    return x.unsqueeze(0).float().to(model.device)


def _scaled(saliency: np.ndarray) -> np.ndarray:
    saliency = np.nan_to_num(np.asarray(saliency, np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    top = saliency.max()
    return (saliency / top if top > 0 else saliency).astype(np.float32)


def explain_pair(model: AnyTwin, a: torch.Tensor, b: torch.Tensor, method: str = "gradients",
                 **options: Any) -> PairSaliency:  # fmt: skip
    """Saliency maps of one pair of inputs (each without a batch dimension) by ``method``.

    The model is put in eval mode (so BatchNorm and dropout do not move) and its weights are not
    changed; gradients are taken with respect to the inputs (and feature maps) only.
    """
    factory: Callable[..., tuple[np.ndarray, np.ndarray]] = SALIENCY.get(method, field="method")
    was_training = model.training
    model.eval()
    try:
        x_a, x_b = _batch(a, model), _batch(b, model)
        with torch.no_grad():
            value = float(model(x_a, x_b)[0])
        with torch.enable_grad():
            map_a, map_b = factory(model, x_a, x_b, **options)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return PairSaliency(_scaled(map_a), _scaled(map_b), value, method)
