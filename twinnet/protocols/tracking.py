"""The ``tracking`` protocol: one-pass evaluation (OTB OPE) of a tracking model on sequences.

Each sequence is tracked from its first ground-truth box to its end; the figures are the success
AUC (primary), precision at 20 pixels and frames per second, per sequence and as their mean over
sequences (:mod:`twinnet.tracking.metrics`). Frames without ground truth are left out.

With ``reset`` each sequence is also run a second time the VOT way (:mod:`twinnet.tracking.reset`:
re-initialised ``skip`` frames after each failure), adding ``accuracy`` (mean IoU while tracking,
after a ``burn_in``), ``robustness`` (failures per 100 frames) and ``failures``; the primary metric
stays the one-pass success AUC.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError, DataError
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.metrics import mean_figures, sequence_figures
from twinnet.tracking.reset import VOT_BURN_IN, VOT_SKIP, mean_reset_figures, reset_figures, run_reset
from twinnet.tracking.tracker import build_tracker


@register_protocol("tracking")
class TrackingProtocol(EvaluationProtocol):
    """OTB one-pass evaluation. Options: ``max_frames`` (track only the first frames of each
    sequence, for quick validation), ``tracker`` (tracker settings overriding the model's),
    ``reset`` (add VOT's reset evaluation, with ``skip`` frames before a re-initialisation and a
    ``burn_in`` left out of the accuracy)."""

    primary_metric: ClassVar[str] = "success_auc"
    greater_is_better: ClassVar[bool] = True
    needs: ClassVar[str] = "sequences"
    scores_pairs: ClassVar[bool] = False
    summary: ClassVar[str] = "tracking: one-pass success AUC, precision@20 px and fps over sequence folders"

    def __init__(self, seed: int = 0, max_frames: int | None = None, tracker: dict[str, Any] | None = None,
                 reset: bool = False, skip: int = VOT_SKIP, burn_in: int = VOT_BURN_IN) -> None:  # fmt: skip
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 2):  # fmt: skip
            raise ConfigError(f"max_frames must be a whole number of at least 2, not {max_frames!r}")
        if tracker is not None and not isinstance(tracker, dict):
            raise ConfigError(f"tracker must be a mapping of tracker settings, not {tracker!r}")
        if not isinstance(reset, bool):
            raise ConfigError(f"reset must be true or false, not {reset!r}")
        for name, value, low in (("skip", skip, 1), ("burn_in", burn_in, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number of frames, at least {low}, not {value!r}")
        self.reset, self.skip, self.burn_in = reset, skip, burn_in
        self.seed = seed  # one-pass evaluation draws nothing; taken for the trainer's uniform call
        self.max_frames = max_frames
        self.tracker = dict(tracker or {})

    def check_data(self, data: Dataset) -> None:
        if not isinstance(data.items, SequenceItems):
            raise DataError(f"{data.source or 'this data'}: the tracking protocol needs tracking sequences "
                            "(a folder of sequence folders with groundtruth_rect.txt or groundtruth.txt)")  # fmt: skip
        missing = [s.name for s in data.items.sequences if s.boxes is None]
        if missing:
            raise DataError(f"{data.source}: no ground truth for {', '.join(missing[:5])}")

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        self.check_data(data)
        assert isinstance(data.items, SequenceItems)
        per_sequence: dict[str, dict[str, Any]] = {}
        resets: list[dict[str, Any]] = []
        for seq in data.items.sequences:
            result = build_tracker(model, **self.tracker).track(seq, max_frames=self.max_frames)
            assert seq.boxes is not None
            figures = sequence_figures(result.boxes, seq.boxes[: len(result.boxes)])
            figures.update(fps=result.fps, frames_per_cpu_second=result.frames_per_cpu_second,
                           seconds=result.seconds, tracked_frames=len(result.boxes) - 1)  # fmt: skip
            if self.reset:
                run = run_reset(build_tracker(model, **self.tracker), seq, skip=self.skip, max_frames=self.max_frames)
                vot = reset_figures(run.boxes, run.states, seq.boxes[: len(run.states)], self.burn_in)
                figures.update(vot)
                resets.append(vot)
            per_sequence[seq.name] = figures
        overall = mean_figures(per_sequence)
        metrics = {"success_auc": overall["success_auc"], "precision_20": overall["precision_20"],
                   "fps": overall.get("fps", 0.0), "sequences": len(per_sequence)}  # fmt: skip
        if self.reset:
            metrics.update(mean_reset_figures(resets))
        return self.result(metrics, per_sequence=per_sequence)
