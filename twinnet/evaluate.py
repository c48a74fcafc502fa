"""Evaluate a saved model on a data path: what ``twinnet evaluate`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twinnet.data.archives import looks_like_omniglot, read_items
from twinnet.data.items import ItemSet, load_images
from twinnet.data.omniglot import load_runs
from twinnet.data.pairs import read_pairs_file
from twinnet.data.signatures import read_offline_signatures, read_online_signatures
from twinnet.data.text import read_text_pair_file
from twinnet.errors import ConfigError, DataError
from twinnet.io import load
from twinnet.protocols import (
    evaluate_nway,
    evaluate_pairs,
    evaluate_retrieval,
    evaluate_runs,
    evaluate_sts,
    evaluate_verification,
    evaluate_within_group,
)
from twinnet.signatures import evaluate_signatures, signature_pair_accuracy

PROTOCOLS = ("verification", "oneshot", "nway", "within-alphabet", "omniglot-runs", "signature", "sts", "pairs",
             "retrieval")  # fmt: skip
TEXT_PROTOCOLS = ("sts", "pairs", "retrieval")


def evaluate_path(
    model_path: str | Path,
    data: str | Path,
    *,
    protocol: str = "verification",
    ways: int = 5,
    shots: int = 1,
    episodes: int = 1000,
    n_pairs: int = 4000,
    prototype: str = "nearest",
    class_depth: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    references: int = 5,
    aggregate: str = "min",
    pairs_file: str | Path | None = None,
    text_format: str = "auto",
) -> dict[str, Any]:
    """Run ``protocol`` on ``data``: an image folder or zip of classes, a pairs file (verification),
    or a folder of official one-shot runs (``omniglot-runs``).

    Protocols: ``verification`` (balanced pairs, or the pairs of a pairs file), ``oneshot``/``nway``
    (random N-way K-shot episodes), ``within-alphabet`` (N classes of one group, drawer A as support
    and drawer B as queries), ``omniglot-runs``. ``class_depth=None`` picks 2 for Omniglot's layout.
    Text models take a text pairs file (STS-B, MRPC, CSV/TSV/JSONL) and the protocols ``sts``,
    ``pairs`` and ``retrieval`` (see :func:`evaluate_text_path`).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if prototype not in ("nearest", "mean"):
        raise ConfigError(f"--prototype: {prototype!r} is not one of nearest, mean")
    model = load(model_path)
    spec = model.config.input
    data = Path(data)
    if spec.kind == "text" or protocol in TEXT_PROTOCOLS:
        return evaluate_text_path(model, data, protocol, text_format)
    if protocol == "signature":
        return evaluate_signature_path(model, data, references, aggregate, seed, skip_bad, pairs_file)
    if protocol == "omniglot-runs":
        return {
            "protocol": "omniglot-runs",
            **evaluate_runs(model, load_runs(data, spec)).to_dict(),
            "source": str(data),
        }
    if data.is_file() and data.suffix.lower() != ".zip":
        if protocol != "verification":
            raise DataError(f"{data}: a pairs file supports --protocol verification only")
        pairs_file = read_pairs_file(data)
        images, kept = load_images(pairs_file.paths, spec, skip_bad)
        if len(kept) != len(pairs_file.paths):
            raise DataError(f"{data}: some images of the pairs could not be read")
        items = ItemSet(images, np.zeros(len(images), np.int64), ["?"], [str(p) for p in pairs_file.paths])
        result, _, _ = evaluate_verification(model, items, pairs_file.pairs, calibration=model.calibration)
        return result.to_dict()
    if class_depth is None:
        class_depth = 2 if looks_like_omniglot(data) else 1
    items = read_items(data, spec, class_depth, skip_bad)
    if protocol == "within-alphabet":
        r = evaluate_within_group(model, items, ways, episodes, seed=seed)
        return {**r.to_dict(), "protocol": "within-alphabet"}
    if protocol == "verification":
        items.require_min_per_class(2, "same-class pairs")
        result, _, _ = evaluate_verification(model, items, n_pairs=n_pairs, seed=seed, calibration=model.calibration)
        return result.to_dict()
    nway = evaluate_nway(model, items, ways, shots, episodes, seed=seed, prototype=prototype)  # type: ignore[arg-type]
    return {**nway.to_dict(), "protocol": "nway"}


def evaluate_signature_path(
    model: Any, data: Path, references: int, aggregate: str, seed: int, skip_bad: bool, pairs_file: str | Path | None
) -> dict[str, Any]:
    """Writer-independent signature verification of the writers in ``data`` (all of them are test
    writers: point it at writers the model never saw)."""
    if aggregate not in ("min", "mean"):
        raise ConfigError(f"--aggregate: {aggregate!r} is not one of min, mean")
    spec = model.config.input
    if spec.kind == "sequence":
        items = read_online_signatures(data, spec.length or 256)
    else:
        items = read_offline_signatures(data, spec, skip_bad)
    stored = (model.calibration.extra.get("signature") if model.calibration else None) or {}
    # the stored threshold was calibrated for one (references, aggregate) setting; use it only for that
    same_setting = stored.get("references") == references and stored.get("aggregate") == aggregate
    threshold = stored.get("threshold") if same_setting else None
    result = evaluate_signatures(model, items, references, aggregate, seed, threshold).to_dict()  # type: ignore[arg-type]
    if pairs_file is not None:
        result["pairs"] = signature_pair_accuracy(model, items, pairs_file)
    return result


def evaluate_text_path(model: Any, data: Path, protocol: str, text_format: str = "auto") -> dict[str, Any]:
    """Text protocols on a pairs file: ``sts`` (Spearman/Pearson of cosine vs gold score), ``pairs``
    (accuracy and F1 at the model's calibrated threshold, AP, ROC AUC) or ``retrieval``
    (recall@k and MRR@10, each distinct first text a query against all distinct second texts)."""
    if model.config.input.kind != "text":
        raise ConfigError(f"--protocol {protocol}: this is not a text model (its input is {model.config.input.kind})")
    if protocol not in TEXT_PROTOCOLS:
        raise ConfigError(f"--protocol: a text model takes {', '.join(TEXT_PROTOCOLS)}, not {protocol!r}")
    pairs = read_text_pair_file(data, text_format)
    if protocol == "sts":
        result: Any = evaluate_sts(model, pairs.items, pairs.pairs)
    elif protocol == "pairs":
        result = evaluate_pairs(model, pairs.items, pairs.pairs, model.calibration)
    else:
        result = evaluate_retrieval(model, pairs.items, pairs.pairs)
    return {**result.to_dict(), "source": str(data)}
