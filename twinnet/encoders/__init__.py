"""Encoders: modules that map one input to an embedding vector.

Importing this package registers the built-in encoders (``conv4``, ``koch``, ``mlp``, ``signet``,
``tdnn``, ``gru``, ``text``, ``small_text``, ``face_resnet``; for tracking, the fully-convolutional
``siamfc_alexnet``, ``siamfc_light`` and ``siamfc_mobile``, which give feature maps; with attention, ``vit`` and
``trajectory_transformer``).
"""

from twinnet.encoders.attention import TrajectoryTransformerEncoder, ViTEncoder
from twinnet.encoders.conv import Conv4Encoder, KochEncoder
from twinnet.encoders.fingerprint import FingerprintEncoder
from twinnet.encoders.fully_conv import SiamFCAlexNet, SiamFCLight
from twinnet.encoders.mlp import MLPEncoder
from twinnet.encoders.mobile import SiamFCMobile
from twinnet.encoders.registry import ENCODERS, build_encoder, register_encoder
from twinnet.encoders.resnet import FaceResNetEncoder
from twinnet.encoders.signature import GRUEncoder, SigNetEncoder, TDNNEncoder
from twinnet.encoders.speaker import ECAPAEncoder, ResemblyzerEncoder, XVectorEncoder
from twinnet.encoders.text import SmallTextEncoder, TransformerTextEncoder, WordVocabulary

__all__ = [
    "ENCODERS",
    "Conv4Encoder",
    "ECAPAEncoder",
    "FaceResNetEncoder",
    "FingerprintEncoder",
    "GRUEncoder",
    "KochEncoder",
    "MLPEncoder",
    "ResemblyzerEncoder",
    "SiamFCAlexNet",
    "SiamFCLight",
    "SiamFCMobile",
    "SigNetEncoder",
    "SmallTextEncoder",
    "TDNNEncoder",
    "TrajectoryTransformerEncoder",
    "TransformerTextEncoder",
    "ViTEncoder",
    "WordVocabulary",
    "XVectorEncoder",
    "build_encoder",
    "register_encoder",
]
