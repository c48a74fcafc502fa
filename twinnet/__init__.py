"""twinnet: twin (Siamese) neural networks — train, evaluate, calibrate, save and serve.

The public API::

    import twinnet
    model = twinnet.build_model(twinnet.ModelConfig(...))      # or twinnet.TwinNetwork(encoder, "euclidean")
    result = twinnet.Trainer(model, twinnet.ContrastiveLoss(margin=1.0), train_items, config,
                             val_items=val_items).fit()
    twinnet.save(model, "my-model")
    model = twinnet.load("my-model")
    twinnet.verify(model, image_a, image_b)
"""

from twinnet._version import __version__
from twinnet.calibrate import Calibration, Threshold, calibrate, calibrate_threshold
from twinnet.compare import (
    COMPARATORS,
    Comparator,
    CosineSimilarity,
    EuclideanDistance,
    MahalanobisDistance,
    MLPMetric,
    SquaredEuclideanDistance,
    WeightedL1,
)
from twinnet.config import Config, InputSpec, ModelConfig, TrainConfig, load_config
from twinnet.data import ItemSet, from_arrays, image_folder, split_by_class, split_by_item
from twinnet.encoders import ENCODERS, register_encoder
from twinnet.errors import ConfigError, DataError, ModelFormatError, TrainingError, TwinnetError
from twinnet.inference import embed, verify
from twinnet.io import load, save
from twinnet.losses import LOSSES, BinaryCrossEntropyLoss, ContrastiveLoss, TripletLoss
from twinnet.model import HalfTwinNetwork, TwinNetwork, build_model
from twinnet.protocols import evaluate_nway, evaluate_verification
from twinnet.train import Trainer, TrainResult, train_from_config

__all__ = [
    "COMPARATORS",
    "ENCODERS",
    "LOSSES",
    "BinaryCrossEntropyLoss",
    "Calibration",
    "Comparator",
    "Config",
    "ConfigError",
    "ContrastiveLoss",
    "CosineSimilarity",
    "DataError",
    "EuclideanDistance",
    "HalfTwinNetwork",
    "InputSpec",
    "ItemSet",
    "MLPMetric",
    "MahalanobisDistance",
    "ModelConfig",
    "ModelFormatError",
    "SquaredEuclideanDistance",
    "Threshold",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TripletLoss",
    "TwinNetwork",
    "TwinnetError",
    "WeightedL1",
    "__version__",
    "build_model",
    "calibrate",
    "calibrate_threshold",
    "embed",
    "evaluate_nway",
    "evaluate_verification",
    "from_arrays",
    "image_folder",
    "load",
    "load_config",
    "register_encoder",
    "save",
    "split_by_class",
    "split_by_item",
    "train_from_config",
    "verify",
]
