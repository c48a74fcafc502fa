"""twinnet: twin (Siamese) neural networks — train, evaluate, calibrate, save and serve.

The public API::

    import twinnet
    model = twinnet.build_model(twinnet.ModelConfig(...))      # or twinnet.TwinNetwork(encoder, "euclidean")
    result = twinnet.Trainer(model, twinnet.ContrastiveLoss(margin=1.0), train_items, config,
                             val_items=val_items).fit()
    twinnet.save(model, "my-model")
    model = twinnet.load("my-model")
    twinnet.verify(model, image_a, image_b)          # or two texts, for a text model
"""

from twinnet._version import __version__
from twinnet.calibrate import (
    Calibration,
    OperatingPoint,
    Provenance,
    Target,
    Threshold,
    calibrate,
    calibrate_threshold,
    data_fingerprint,
    fit_operating_point,
    parse_target,
)
from twinnet.compare import (
    COMPARATORS,
    DISTANCE,
    SCORE,
    Comparator,
    CosineDistance,
    CosineSimilarity,
    EuclideanDistance,
    MahalanobisDistance,
    MLPMetric,
    Orientation,
    SquaredEuclideanDistance,
    WeightedL1,
)
from twinnet.config import Config, InputSpec, ModelConfig, TrainConfig, load_config
from twinnet.data import ItemSet, from_arrays, image_folder, split_by_class, split_by_item
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions, read_dataset
from twinnet.data.text import TextItemSet, TextPairs, read_text_pair_file, text_items
from twinnet.encoders import ENCODERS, register_encoder
from twinnet.errors import ConfigError, DataError, ModelFormatError, TrainingError, TwinnetError
from twinnet.inference import embed, embed_texts, verify
from twinnet.io import load, save
from twinnet.losses import (
    LOSSES,
    BinaryCrossEntropyLoss,
    ContrastiveLoss,
    CoSENTLoss,
    CosineRegressionLoss,
    MultipleNegativesRankingLoss,
    OnlineContrastiveLoss,
    TripletLoss,
    TwinLoss,
)
from twinnet.model import HalfTwinNetwork, TwinNetwork, build_model
from twinnet.normalize import ScoreNormalizer
from twinnet.operating import drift_report, fit_cohort_normalizer, recalibrate
from twinnet.protocols import (
    PROTOCOLS,
    EvaluationProtocol,
    ProtocolResult,
    build_protocol,
    evaluate_nway,
    evaluate_pairs,
    evaluate_retrieval,
    evaluate_sts,
    evaluate_verification,
    register_protocol,
)
from twinnet.tracking import Tracker
from twinnet.train import Trainer, TrainResult, train_from_config

__all__ = [
    "COMPARATORS",
    "DATA_SOURCES",
    "DISTANCE",
    "ENCODERS",
    "LOSSES",
    "PROTOCOLS",
    "SCORE",
    "BinaryCrossEntropyLoss",
    "Calibration",
    "CoSENTLoss",
    "Comparator",
    "Config",
    "ConfigError",
    "ContrastiveLoss",
    "CosineDistance",
    "CosineRegressionLoss",
    "CosineSimilarity",
    "DataError",
    "DataSource",
    "Dataset",
    "EuclideanDistance",
    "EvaluationProtocol",
    "HalfTwinNetwork",
    "InputSpec",
    "ItemSet",
    "MLPMetric",
    "MahalanobisDistance",
    "ModelConfig",
    "ModelFormatError",
    "MultipleNegativesRankingLoss",
    "OnlineContrastiveLoss",
    "OperatingPoint",
    "Orientation",
    "ProtocolResult",
    "Provenance",
    "ReadOptions",
    "ScoreNormalizer",
    "SquaredEuclideanDistance",
    "Target",
    "TextItemSet",
    "TextPairs",
    "Threshold",
    "Tracker",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TripletLoss",
    "TwinLoss",
    "TwinNetwork",
    "TwinnetError",
    "WeightedL1",
    "__version__",
    "build_model",
    "build_protocol",
    "calibrate",
    "calibrate_threshold",
    "data_fingerprint",
    "drift_report",
    "embed",
    "embed_texts",
    "evaluate_nway",
    "evaluate_pairs",
    "evaluate_retrieval",
    "evaluate_sts",
    "evaluate_verification",
    "fit_cohort_normalizer",
    "fit_operating_point",
    "from_arrays",
    "image_folder",
    "load",
    "load_config",
    "parse_target",
    "read_dataset",
    "read_text_pair_file",
    "recalibrate",
    "register_encoder",
    "register_protocol",
    "save",
    "split_by_class",
    "split_by_item",
    "text_items",
    "train_from_config",
    "verify",
]
