"""Losses for twin networks; one per module, selectable by name through :data:`LOSSES`."""

from twinnet.losses.anchor_free import AnchorFreeLoss
from twinnet.losses.angle import AnglELoss
from twinnet.losses.barlow_twins import BarlowTwinsLoss
from twinnet.losses.base import LOSSES, EmbeddingLoss, PairLoss, RankingLoss, TwinLoss, check_same
from twinnet.losses.bce import BinaryCrossEntropyLoss
from twinnet.losses.byol import BYOLLoss
from twinnet.losses.contrastive import ContrastiveLoss
from twinnet.losses.cosent import CoSENTLoss
from twinnet.losses.cosine_regression import CosineRegressionLoss
from twinnet.losses.ge2e import GE2ELoss
from twinnet.losses.margin_softmax import ArcFaceLoss, CosFaceLoss, MarginSoftmaxLoss
from twinnet.losses.ntxent import NTXentLoss
from twinnet.losses.online_contrastive import OnlineContrastiveLoss
from twinnet.losses.quantization import HashingLoss
from twinnet.losses.ranking import MultipleNegativesRankingLoss
from twinnet.losses.rpn import RPNLoss
from twinnet.losses.score_map import LogisticScoreMapLoss
from twinnet.losses.simsiam import SimSiamLoss
from twinnet.losses.triplet import TripletLoss
from twinnet.losses.vicreg import VICRegLoss
from twinnet.losses.views import MomentumTower, ViewsLoss

__all__ = [
    "LOSSES",
    "AnchorFreeLoss",
    "AnglELoss",
    "ArcFaceLoss",
    "BYOLLoss",
    "BarlowTwinsLoss",
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
    "MomentumTower",
    "MultipleNegativesRankingLoss",
    "NTXentLoss",
    "OnlineContrastiveLoss",
    "PairLoss",
    "RPNLoss",
    "RankingLoss",
    "SimSiamLoss",
    "TripletLoss",
    "TwinLoss",
    "VICRegLoss",
    "ViewsLoss",
    "check_same",
]
