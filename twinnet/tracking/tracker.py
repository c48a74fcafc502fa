"""The SiamFC tracker: ``Tracker(model).init(frame, box)``, then ``.update(frame) → (box, score)``.

At ``init`` the exemplar (the target with SiamFC's context margin, resized to the model's exemplar
size) is embedded once. Every ``update`` crops the search region around the last position at
``scales`` sizes, embeds them as one batch, correlates each with the exemplar, upsamples the
responses (bicubic, ``response_up``×), penalises the scales that change the size, picks the best
scale, mixes a cosine window into its response, and moves to the peak; the size follows the best
scale, damped by ``scale_lr``. Hyper-parameters come from the model's saved config
(``model.tracker``), then from the keyword overrides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from twinnet.compare import comparator_names
from twinnet.config import TrackerSettings
from twinnet.errors import ConfigError, DataError
from twinnet.registry import Registry
from twinnet.tracking.geometry import _cv2, center_of, clip_box, context_side, crop, mean_colour
from twinnet.tracking.onepass import TrackResult, run_tracker
from twinnet.tracking.sequences import Sequence
from twinnet.tracking.xcorr import MapComparator, response_stride

if TYPE_CHECKING:
    from twinnet.model import AnyTwin


def tracker_settings(model: AnyTwin, overrides: dict[str, Any] | None = None) -> TrackerSettings:
    """The model's saved tracker settings (or the defaults) with ``overrides`` applied; a bad
    override is a ConfigError naming it."""
    from pydantic import ValidationError

    from twinnet.config import format_validation_error

    base = model.config.tracker if model.config is not None and model.config.tracker is not None else TrackerSettings()
    if not overrides:
        return base
    try:
        return TrackerSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "tracker")) from None


#: Single-object trackers over a tracking model, by name, each built as ``factory(model, **settings)``:
#: ``siamfc`` (:class:`Tracker`), ``anchor_free`` (:class:`twinnet.tracking.anchor_free.AnchorFreeTracker`),
#: ``rpn`` (:class:`twinnet.tracking.rpn.RPNTracker`).
#: A model's map comparator names the one that reads its maps (``MapComparator.tracker``).
TRACKERS: Registry[Any] = Registry("tracker", builtins="twinnet.tracking")


def _map_comparator(model: AnyTwin) -> MapComparator:
    comparator = model.comparator
    if not isinstance(comparator, MapComparator):
        raise ConfigError(f"this model's comparator ({type(comparator).__name__}) gives no score maps: "
                          "tracking needs a fully-convolutional twin with a map comparator "
                          f"({', '.join(comparator_names('maps'))})")  # fmt: skip
    return comparator


def build_tracker(model: AnyTwin, **overrides: Any) -> Tracker:
    """The tracker that reads this model's maps (the one its comparator names: ``siamfc`` for
    ``xcorr``, ``anchor_free`` and ``rpn`` for the box heads), with settings ``overrides``."""
    tracker: Tracker = TRACKERS.get(_map_comparator(model).tracker, field="model.comparator")(model, **overrides)
    return tracker


@TRACKERS.register("siamfc")
class Tracker:
    """A SiamFC tracker over a fully-convolutional twin (exemplar = side a, search = side b).

    Args:
        model: a twin whose comparator gives score maps (``xcorr``) and whose input specs give the
            exemplar (``input``) and search (``input_b``) sizes.
        overrides: tracker settings replacing the model's (``scale_step``, ``window_influence``, …).
    """

    #: The tracker name (in :data:`TRACKERS`) a model's comparator must name.
    kind: ClassVar[str] = "siamfc"

    def __init__(self, model: AnyTwin, **overrides: Any) -> None:
        comparator = _map_comparator(model)
        if comparator.tracker != self.kind:
            raise ConfigError(f"this model's comparator ({type(comparator).__name__}) is read by the "
                              f"{comparator.tracker!r} tracker, not {self.kind!r}: use "
                              "twinnet.tracking.build_tracker(model)")  # fmt: skip
        self.model = model.eval()
        self.settings = s = tracker_settings(model, overrides)
        self.exemplar_size = int(model.input_spec("a").size[0])
        self.search_size = int(model.input_spec("b").size[0])
        self.device = model.device
        n = s.scales
        self.scale_factors = s.scale_step ** np.linspace(-(n // 2), n // 2, n)
        self.penalties = np.where(np.arange(n) == n // 2, 1.0, s.scale_penalty)
        self._kernel: torch.Tensor | None = None
        self._response_size = 0
        self.stride = 0

    def _tensor(self, patches: list[np.ndarray]) -> torch.Tensor:
        batch = np.stack(patches).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).float().div_(255.0)

    @torch.inference_mode()
    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        """Start tracking the target at ``box`` (0-based ``x, y, w, h``) in ``frame`` (``H×W×3`` RGB)."""
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
            raise DataError(f"the initial box must be x,y,w,h with a positive width and height, not {box.tolist()}")
        s = self.settings
        self.size = (frame.shape[1], frame.shape[0])
        self.center = center_of(box)
        self.target = box[2:].copy()
        self.base_target = self.target.copy()
        self.z_side = context_side(box[2], box[3], s.context)
        self.x_side = self.z_side * self.search_size / self.exemplar_size
        self.base_z, self.base_x = self.z_side, self.x_side
        self.pad = mean_colour(frame)
        z = crop(frame, self.center, self.z_side, self.exemplar_size, self.pad)
        self._kernel = self.model.embed(self._tensor([z]), "a")
        up = s.response_up
        if not self._response_size:  # sizes fixed by the model: probe once
            probe = self.model.comparator(self._kernel, self.model.embed(
                torch.zeros(1, 3, self.search_size, self.search_size, device=self.device), "b"))  # fmt: skip
            self._response_size = int(probe.shape[-1])
            self.stride = response_stride(self.search_size, self.exemplar_size, self._response_size)
            self.up_size = up * self._response_size
            hann = np.hanning(self.up_size)
            window = np.outer(hann, hann)
            self.window = window / window.sum()

    @torch.inference_mode()
    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The target's box in the next ``frame`` and the tracker's confidence (the sigmoid of the
        response's peak, in [0, 1])."""
        if self._kernel is None:
            raise RuntimeError("call init(frame, box) before update(frame)")
        cv2 = _cv2()
        s = self.settings
        sides = self.x_side * self.scale_factors
        x = self._tensor([crop(frame, self.center, side, self.search_size, self.pad) for side in sides])
        responses = self.model.comparator(self._kernel, self.model.embed(x, "b"))[:, 0].float().cpu().numpy()
        peaks_raw = responses.reshape(len(sides), -1).max(1)
        up = np.stack([cv2.resize(r, (self.up_size, self.up_size), interpolation=cv2.INTER_CUBIC) for r in responses])
        best = int(np.argmax(up.reshape(len(sides), -1).max(1) * self.penalties))
        response = up[best] - up[best].min()
        response /= response.sum() + 1e-16
        response = (1 - s.window_influence) * response + s.window_influence * self.window
        row, col = np.unravel_index(int(np.argmax(response)), response.shape)
        # the peak's displacement from the centre: upsampled cells → response cells → search pixels → image
        disp = (np.array([col, row], dtype=np.float64) - (self.up_size - 1) / 2) / s.response_up * self.stride
        self.center = self.center + disp * sides[best] / self.search_size
        scale = (1 - s.scale_lr) + s.scale_lr * self.scale_factors[best]
        scale = float(np.clip(scale * self.z_side / self.base_z, s.min_scale, s.max_scale)) * self.base_z / self.z_side
        self.target = self.target * scale
        self.z_side *= scale
        self.x_side *= scale
        w, h = self.size
        self.center = np.clip(self.center, 0, [w, h])
        box = clip_box(np.array([*(self.center - self.target / 2), *self.target]), self.size)
        score = float(1 / (1 + np.exp(-peaks_raw[best])))
        return box, score

    def track(self, sequence: Sequence, box: np.ndarray | None = None, *, max_frames: int | None = None) -> TrackResult:
        """Track through ``sequence`` from ``box`` (default: its first ground-truth box)."""
        return run_tracker(self, sequence, box, max_frames=max_frames)
