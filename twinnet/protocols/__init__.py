"""Evaluation protocols, selectable by name through :data:`PROTOCOLS`.

Each protocol is one module here plus its ``@register_protocol`` line: ``verification``, ``nway``
(``oneshot``), ``within-alphabet``, ``omniglot-runs``, ``signature``, ``sts``, ``pairs``, ``openset`` and
``retrieval`` (and ``fvc``, fingerprints; ``knn`` and ``linear_probe``, the self-supervised
read-outs). The ``evaluate_*`` functions are the same protocols called directly on items.
"""

from twinnet.protocols.base import (
    PROTOCOLS,
    EvaluationProtocol,
    ProtocolResult,
    build_protocol,
    protocol_names,
    register_protocol,
)
from twinnet.protocols.episodes import (
    Episodes,
    NWayProtocol,
    OmniglotRunsProtocol,
    OneShotProtocol,
    WithinGroupProtocol,
    classify_episodes,
    evaluate_nway,
    evaluate_runs,
    evaluate_within_group,
    sample_episodes,
    sample_within_group_episodes,
)
from twinnet.protocols.fvc import FVCProtocol, fvc_metrics, fvc_pairs
from twinnet.protocols.openset import OpenSetProtocol, open_set_rates
from twinnet.protocols.probe import (
    KNNProtocol,
    LinearProbeProtocol,
    calc_knn_accuracy,
    calc_linear_probe_accuracy,
)
from twinnet.protocols.signature import (
    SignatureProtocol,
    calibrate_signature_threshold,
    evaluate_signatures,
    signature_pair_accuracy,
    signature_scores,
)
from twinnet.protocols.speaker import SpeakerIdentificationProtocol, SpeakerVerificationProtocol, min_dcf
from twinnet.protocols.text import (
    PairClassificationProtocol,
    RetrievalProtocol,
    STSProtocol,
    evaluate_pairs,
    evaluate_retrieval,
    evaluate_sts,
    pair_similarities,
)
from twinnet.protocols.tracking import TrackingProtocol
from twinnet.protocols.verification import (
    VerificationProtocol,
    evaluate_verification,
    pair_values,
    score_pairs,
    verification_metrics,
)

__all__ = [
    "PROTOCOLS",
    "Episodes",
    "EvaluationProtocol",
    "FVCProtocol",
    "KNNProtocol",
    "LinearProbeProtocol",
    "NWayProtocol",
    "OmniglotRunsProtocol",
    "OneShotProtocol",
    "OpenSetProtocol",
    "PairClassificationProtocol",
    "ProtocolResult",
    "RetrievalProtocol",
    "STSProtocol",
    "SignatureProtocol",
    "SpeakerIdentificationProtocol",
    "SpeakerVerificationProtocol",
    "TrackingProtocol",
    "VerificationProtocol",
    "WithinGroupProtocol",
    "build_protocol",
    "calc_knn_accuracy",
    "calc_linear_probe_accuracy",
    "calibrate_signature_threshold",
    "classify_episodes",
    "evaluate_nway",
    "evaluate_pairs",
    "evaluate_retrieval",
    "evaluate_runs",
    "evaluate_signatures",
    "evaluate_sts",
    "evaluate_verification",
    "evaluate_within_group",
    "fvc_metrics",
    "fvc_pairs",
    "min_dcf",
    "open_set_rates",
    "pair_similarities",
    "pair_values",
    "protocol_names",
    "register_protocol",
    "sample_episodes",
    "sample_within_group_episodes",
    "score_pairs",
    "signature_pair_accuracy",
    "signature_scores",
    "verification_metrics",
]
