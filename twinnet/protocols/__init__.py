"""Evaluation protocols (temporary shim while the registry lands)."""

from twinnet.protocols._legacy import *  # noqa: F403
from twinnet.protocols._legacy import embed_batches, model_device, native_thresholds, pair_similarities, score_pairs  # noqa: F401
from twinnet.protocols.base import PROTOCOLS, EvaluationProtocol, ProtocolResult, build_protocol, register_protocol  # noqa: F401
