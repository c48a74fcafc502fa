"""Object tracking with a fully-convolutional twin (SiamFC, Bertinetto et al. 2016).

The parts, each registered where its kind lives:

- encoders ``siamfc_alexnet`` and ``siamfc_light`` (:mod:`twinnet.encoders.fully_conv`) and
  ``siamfc_mobile`` (:mod:`twinnet.encoders.mobile`): images → feature maps;
- comparator ``xcorr`` (:mod:`twinnet.tracking.xcorr`): exemplar map ⋆ search map → score map;
  ``dw_xcorr`` (:mod:`twinnet.tracking.dw_xcorr`): the depth-wise correlation (one response channel
  per feature channel), fused into a score map;
- the box heads, on what they share (:mod:`twinnet.tracking.box_head`: the correlation trunk and the
  tracker's post-processing): the anchor-free head (:mod:`twinnet.tracking.anchor_free`): comparator,
  label assignment and tracker ``anchor_free``, loss ``anchor_free`` (:mod:`twinnet.losses.anchor_free`);
  SiamRPN's anchor-based head (:mod:`twinnet.tracking.rpn`): comparator, anchors, label assignment
  and tracker ``rpn``, loss ``rpn`` (:mod:`twinnet.losses.rpn`);
- trackers, by name (:data:`twinnet.tracking.tracker.TRACKERS`): the one a model's comparator names is
  built by :func:`build_tracker`;
- loss ``score_map_logistic`` (:mod:`twinnet.losses.score_map`) and its batch plan ``tracking_pairs``
  (:mod:`twinnet.tracking.plan`);
- data format ``tracking`` (:mod:`twinnet.tracking.source`): folders of OTB/VOT sequences, videos;
- protocol ``tracking`` (:mod:`twinnet.protocols.tracking`): one-pass success AUC, precision, fps;
  with ``reset``, VOT's accuracy and robustness too (:mod:`twinnet.tracking.reset`).

Here: sequence readers, crop geometry, metrics, the :class:`Tracker` and the OpenCV anchors.
"""

from twinnet.tracking import plan as _plan  # noqa: F401  (registers the tracking_pairs batch plan)
from twinnet.tracking.anchor_free import AnchorFreeHead, AnchorFreeTracker
from twinnet.tracking.anchors import OpenCVTracker, StillBox, build_anchor
from twinnet.tracking.dw_xcorr import DepthwiseCrossCorrelation, depthwise_xcorr
from twinnet.tracking.geometry import box_to_crop, center_of, context_side, crop, crop_to_box
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.metrics import (
    calc_center_error,
    calc_iou,
    calc_precision,
    calc_success_auc,
    calc_success_curve,
    sequence_figures,
)
from twinnet.tracking.onepass import SingleTracker, TrackResult, run_tracker
from twinnet.tracking.reset import ResetResult, reset_figures, run_reset
from twinnet.tracking.rpn import RPNHead, RPNTracker
from twinnet.tracking.sequences import (
    Sequence,
    parse_box,
    read_boxes,
    read_coco_stills,
    read_sequence,
    read_sequences,
    read_video,
    write_boxes,
)
from twinnet.tracking.tracker import TRACKERS, Tracker, build_tracker, tracker_settings
from twinnet.tracking.xcorr import CrossCorrelation, MapComparator, ScoreMapComparator

__all__ = [
    "TRACKERS",
    "AnchorFreeHead",
    "AnchorFreeTracker",
    "CrossCorrelation",
    "DepthwiseCrossCorrelation",
    "MapComparator",
    "OpenCVTracker",
    "RPNHead",
    "RPNTracker",
    "ResetResult",
    "ScoreMapComparator",
    "Sequence",
    "SequenceItems",
    "SingleTracker",
    "StillBox",
    "TrackResult",
    "Tracker",
    "box_to_crop",
    "build_anchor",
    "build_tracker",
    "calc_center_error",
    "calc_iou",
    "calc_precision",
    "calc_success_auc",
    "calc_success_curve",
    "center_of",
    "context_side",
    "crop",
    "crop_to_box",
    "depthwise_xcorr",
    "parse_box",
    "read_boxes",
    "read_coco_stills",
    "read_sequence",
    "read_sequences",
    "read_video",
    "reset_figures",
    "run_reset",
    "run_tracker",
    "sequence_figures",
    "tracker_settings",
    "write_boxes",
]
