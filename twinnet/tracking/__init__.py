"""Object tracking with a fully-convolutional twin (SiamFC, Bertinetto et al. 2016).

The parts, each registered where its kind lives:

- encoders ``siamfc_alexnet`` and ``siamfc_light`` (:mod:`twinnet.encoders.fully_conv`): images → feature maps;
- comparator ``xcorr`` (:mod:`twinnet.tracking.xcorr`): exemplar map ⋆ search map → score map;
- loss ``score_map_logistic`` (:mod:`twinnet.losses.score_map`) and its batch plan ``tracking_pairs``
  (:mod:`twinnet.tracking.plan`);
- data format ``tracking`` (:mod:`twinnet.tracking.source`): folders of OTB/VOT sequences, videos;
- protocol ``tracking`` (:mod:`twinnet.protocols.tracking`): one-pass success AUC, precision, fps.

Here: sequence readers, crop geometry, metrics, the :class:`Tracker` and the OpenCV anchors.
"""

from twinnet.tracking import plan as _plan  # noqa: F401  (registers the tracking_pairs batch plan)
from twinnet.tracking.anchors import OpenCVTracker, StillBox, build_anchor
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
from twinnet.tracking.tracker import Tracker, tracker_settings
from twinnet.tracking.xcorr import CrossCorrelation, ScoreMapComparator

__all__ = [
    "CrossCorrelation",
    "OpenCVTracker",
    "ScoreMapComparator",
    "Sequence",
    "SequenceItems",
    "SingleTracker",
    "StillBox",
    "TrackResult",
    "Tracker",
    "box_to_crop",
    "build_anchor",
    "calc_center_error",
    "calc_iou",
    "calc_precision",
    "calc_success_auc",
    "calc_success_curve",
    "center_of",
    "context_side",
    "crop",
    "crop_to_box",
    "parse_box",
    "read_boxes",
    "read_coco_stills",
    "read_sequence",
    "read_sequences",
    "read_video",
    "run_tracker",
    "sequence_figures",
    "tracker_settings",
    "write_boxes",
]
