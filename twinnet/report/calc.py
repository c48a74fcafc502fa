"""Pure figures behind the report's plots (no drawing, no I/O beyond reading ``metrics.jsonl``).

ROC points, EER and TAR@FAR come from :mod:`twinnet.metrics`; these functions only reshape them for
plotting (DET axes, histograms, an embedding map, the most confused pairs, training curves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from twinnet.errors import DataError
from twinnet.metrics import calc_roc


def calc_det(similarity: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(far, frr)`` at every threshold of :func:`twinnet.metrics.calc_roc` (FRR = 1 − TAR), the
    points of a DET curve."""
    far, tar, _ = calc_roc(similarity, same)
    return far, 1.0 - tar


def calc_probit(rates: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Rates on the normal-deviate scale of DET plots, clipped to ``[floor, 1 − floor]``."""
    return norm.ppf(np.clip(np.asarray(rates, np.float64), floor, 1 - floor))


def calc_histograms(similarity: np.ndarray, same: np.ndarray, bins: int = 40) -> dict[str, np.ndarray]:
    """Shared bin edges and the densities of genuine (same) and impostor (different) values."""
    similarity, same = np.asarray(similarity, np.float64), np.asarray(same, bool)
    edges = np.histogram_bin_edges(similarity, bins=bins)
    genuine = np.histogram(similarity[same], bins=edges, density=True)[0] if same.any() else np.zeros(bins)
    impostor = np.histogram(similarity[~same], bins=edges, density=True)[0] if (~same).any() else np.zeros(bins)
    return {"edges": edges, "genuine": genuine, "impostor": impostor}


def calc_embedding_map(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of embeddings: ``pca`` (scikit-learn PCA) or ``tsne`` (scikit-learn t-SNE,
    initialised from PCA, perplexity below the number of points)."""
    z = np.asarray(embeddings, np.float64)
    if len(z) < 3:
        raise DataError(f"an embedding map needs at least 3 items, not {len(z)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(z)
    raise ValueError(f"method must be pca or tsne, not {method!r}")


def calc_confused(similarity: np.ndarray, same: np.ndarray, threshold: float, k: int = 4) -> dict[str, np.ndarray]:
    """Indices of the ``k`` worst false accepts (different pairs most alike at or above the
    similarity ``threshold``) and false rejects (same pairs least alike below it), worst first."""
    similarity, same = np.asarray(similarity, np.float64), np.asarray(same, bool)
    accepted = similarity >= threshold
    fa = np.nonzero(~same & accepted)[0]
    fr = np.nonzero(same & ~accepted)[0]
    return {
        "false_accepts": fa[np.argsort(-similarity[fa], kind="stable")][:k],
        "false_rejects": fr[np.argsort(similarity[fr], kind="stable")][:k],
    }


def read_training_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl``; a bad line is a :class:`DataError` naming it."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not a JSON record ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: not a JSON object")
        records.append(record)
    return records


def calc_training_curves(records: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """``name → (epochs, values)`` for ``train_loss``, ``lr`` and every numeric ``val_*`` field."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for i, record in enumerate(records):
        epoch = float(record.get("epoch", i + 1))
        for key, value in record.items():
            wanted = key in ("train_loss", "lr") or key.startswith("val_")
            if wanted and isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                xs, ys = curves.setdefault(key, ([], []))
                xs.append(epoch)
                ys.append(float(value))
    return curves


def calc_precision_curve(errors: np.ndarray, max_pixels: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Share of frames whose centre error is at most each of ``0 … max_pixels`` pixels (OTB's
    precision plot); a lost frame (NaN) counts as infinitely far."""
    errors = np.nan_to_num(np.asarray(errors, np.float64), nan=np.inf)
    pixels = np.arange(max_pixels + 1, dtype=np.float64)
    share = (errors[None] <= pixels[:, None]).mean(1) if len(errors) else np.zeros(len(pixels))
    return pixels, share


def calc_writer_eers(similarities: np.ndarray, genuine: np.ndarray, writers: np.ndarray) -> dict[int, float]:
    """EER of each writer's questioned signatures (writers with both genuine and forged ones), from
    similarities (greater = more alike: the comparator's ``orientation.to_similarity``)."""
    from twinnet.metrics import calc_eer

    scores = np.asarray(similarities, np.float64)
    out: dict[int, float] = {}
    for w in np.unique(writers):
        mine = writers == w
        if genuine[mine].any() and (~genuine[mine]).any():
            out[int(w)] = float(calc_eer(scores[mine], genuine[mine])[0])
    return out
