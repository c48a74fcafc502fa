"""The parts of training: typed batches, batch plans, the learning-rate schedule, validation,
checkpoints and the training data; :class:`twinnet.train.Trainer` puts them together.

How a loss plugs in: it names a plan in ``batch_plan`` (``pairs``, ``scored_pairs``,
``positive_pairs``, ``pk``, or one registered in :data:`BATCH_PLANS`) and computes itself from the
model and one batch of that plan (``compute(model, batch)``); see :mod:`twinnet.losses.base`.
"""

from twinnet.training.batch import Batch, Inputs, LabelledBatch, PairBatch, ViewsBatch
from twinnet.training.plans import (
    BATCH_PLANS,
    BatchPlan,
    PairsPlan,
    PKPlan,
    PositivePairsPlan,
    ScoredPairsPlan,
    ViewsPlan,
    build_plan,
)
from twinnet.training.pseudo_labels import PseudoLabelPlan  # registers the pseudo_labels plan
from twinnet.training.schedule import lr_factor, make_scheduler

__all__ = [
    "BATCH_PLANS",
    "Batch",
    "BatchPlan",
    "Inputs",
    "LabelledBatch",
    "PKPlan",
    "PairBatch",
    "PairsPlan",
    "PositivePairsPlan",
    "PseudoLabelPlan",
    "ScoredPairsPlan",
    "ViewsBatch",
    "ViewsPlan",
    "build_plan",
    "lr_factor",
    "make_scheduler",
]
