"""Losses for twin networks; one per module, selectable by name through :data:`LOSSES`."""

from twinnet.losses.base import LOSSES, EmbeddingLoss, PairLoss, check_same
from twinnet.losses.bce import BinaryCrossEntropyLoss
from twinnet.losses.contrastive import ContrastiveLoss
from twinnet.losses.triplet import TripletLoss

__all__ = [
    "LOSSES",
    "BinaryCrossEntropyLoss",
    "ContrastiveLoss",
    "EmbeddingLoss",
    "PairLoss",
    "TripletLoss",
    "check_same",
]
