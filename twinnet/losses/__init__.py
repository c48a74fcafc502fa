"""Losses for twin networks; one per module, selectable by name through :data:`LOSSES`."""

from twinnet.losses.base import LOSSES, EmbeddingLoss, PairLoss, RankingLoss, TwinLoss, check_same
from twinnet.losses.bce import BinaryCrossEntropyLoss
from twinnet.losses.contrastive import ContrastiveLoss
from twinnet.losses.cosent import CoSENTLoss
from twinnet.losses.cosine_regression import CosineRegressionLoss
from twinnet.losses.ge2e import GE2ELoss
from twinnet.losses.margin_softmax import ArcFaceLoss, CosFaceLoss, MarginSoftmaxLoss
from twinnet.losses.online_contrastive import OnlineContrastiveLoss
from twinnet.losses.quantization import HashingLoss
from twinnet.losses.ranking import MultipleNegativesRankingLoss
from twinnet.losses.score_map import LogisticScoreMapLoss
from twinnet.losses.triplet import TripletLoss

__all__ = [
    "LOSSES",
    "ArcFaceLoss",
    "BinaryCrossEntropyLoss",
    "CoSENTLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineRegressionLoss",
    "EmbeddingLoss",
    "GE2ELoss",
    "HashingLoss",
    "LogisticScoreMapLoss",
    "MarginSoftmaxLoss",
    "MultipleNegativesRankingLoss",
    "OnlineContrastiveLoss",
    "PairLoss",
    "RankingLoss",
    "TripletLoss",
    "TwinLoss",
    "check_same",
]
