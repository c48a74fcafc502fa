"""Writer-independent signature verification (the protocol of ``twinnet evaluate --protocol signature``).

For each test writer, ``references`` genuine signatures (drawn with a seed) are enrolled in a
gallery as that writer's templates; every other genuine signature and every skilled forgery of
that writer is then verified against the writer: min (nearest reference) or mean distance.
Reported: EER pooled over writers and the mean of per-writer EERs, ROC AUC, and FAR/FRR at a
threshold calibrated the same way on validation writers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.data.items import ItemSet
from twinnet.errors import DataError
from twinnet.gallery import Gallery
from twinnet.metrics import calc_eer, calc_far_frr, calc_roc_auc
from twinnet.protocols import embed_batches
from twinnet.runtime import numpy_rng


@dataclass
class SignatureResult:
    eer: float
    eer_threshold: float
    mean_writer_eer: float
    roc_auc: float
    test_writers: int
    genuine: int
    forgeries: int
    references: int
    aggregate: str
    far: float | None = None
    frr: float | None = None
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    primary_metric: str = "eer"

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("extra", "primary_metric")}
        return {"protocol": "signature", **out, **self.extra}


def signature_scores(
    model: Any, items: ItemSet, references: int = 5, aggregate: Literal["min", "mean"] = "min", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Native values, genuine flags and writer ids of every verified (non-reference) signature."""
    if "writer" not in items.attributes or "genuine" not in items.attributes:
        raise DataError("signature evaluation needs items with writer and genuine attributes (a signature reader)")
    writers, genuine = items.attributes["writer"], items.attributes["genuine"]
    emb = embed_batches(model, items).numpy().astype(np.float32)
    rng = numpy_rng(seed, 21)
    values, flags, owner = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery.create(Path(tmp) / "writers", model)
        try:
            for w in np.unique(writers):
                mine = np.nonzero(writers == w)[0]
                real = mine[genuine[mine]]
                fakes = mine[~genuine[mine]]
                if len(real) <= references:
                    continue  # not enough genuine signatures to enrol and test
                chosen = rng.permutation(real)
                refs, queries = chosen[:references], np.r_[chosen[references:], fakes]
                gallery.enroll(str(w), emb[refs], precomputed=True)
                results = gallery.verify_batch(emb[queries], [str(w)] * len(queries), precomputed=True,
                                               aggregate="best" if aggregate == "min" else "mean")  # fmt: skip
                values += [r.value for r in results]
                flags += genuine[queries].tolist()
                owner += [int(w)] * len(queries)
        finally:
            gallery.close()
    if not values:
        raise DataError(f"no writer has more than {references} genuine signatures")
    return np.asarray(values), np.asarray(flags, bool), np.asarray(owner)


def evaluate_signatures(
    model: Any, items: ItemSet, references: int = 5, aggregate: Literal["min", "mean"] = "min", seed: int = 0,
    threshold: float | None = None,
) -> SignatureResult:  # fmt: skip
    """The writer-independent protocol on ``items`` (test writers only). With ``threshold`` (native
    scale, e.g. from :func:`calibrate_signature_threshold` on validation writers), FAR and FRR."""
    native, genuine, owner = signature_scores(model, items, references, aggregate, seed)
    is_distance = model.comparator.is_distance
    scores = -native if is_distance else native
    eer, eer_t = calc_eer(scores, genuine)
    per_writer = [calc_eer(scores[owner == w], genuine[owner == w])[0] for w in np.unique(owner)
                  if genuine[owner == w].any() and (~genuine[owner == w]).any()]  # fmt: skip
    result = SignatureResult(
        eer=eer, eer_threshold=-eer_t if is_distance else eer_t, mean_writer_eer=float(np.mean(per_writer)),
        roc_auc=calc_roc_auc(scores, genuine), test_writers=len(np.unique(owner)), genuine=int(genuine.sum()),
        forgeries=int((~genuine).sum()), references=references, aggregate=aggregate,
    )  # fmt: skip
    if threshold is not None:
        far, frr = calc_far_frr(scores, genuine, -threshold if is_distance else threshold)
        result.far, result.frr, result.threshold = far, frr, threshold
    return result


def calibrate_signature_threshold(
    model: Any, val_items: ItemSet, references: int = 5, aggregate: Literal["min", "mean"] = "min", seed: int = 0
) -> float:
    """The EER threshold of the protocol on validation writers (native scale)."""
    return evaluate_signatures(model, val_items, references, aggregate, seed).eer_threshold


def signature_pair_accuracy(
    model: Any, items: ItemSet, pairs_csv: str | Path, writers: set[int] | None = None,
    threshold: float | None = None, calibration_writers: set[int] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Accuracy on SigComp2011's ``train_data.csv`` pairs (``target`` 1 = a genuine signature and a
    forgery, 0 = two genuine signatures of one writer), restricted to pairs of ``writers``; the
    threshold is calibrated for best accuracy on the pairs of ``calibration_writers`` unless given."""
    import csv

    from twinnet.metrics import calc_best_accuracy

    path = Path(pairs_csv)
    by_name = {Path(n).parent.name + "/" + Path(n).name: i for i, n in enumerate(items.names)}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 and row and row[0] == "img1":
                continue
            if len(row) != 3 or row[2] not in ("0", "1"):
                raise DataError(f"{path}:{line_no}: expected img1,img2,target with target 0 or 1")
            a, b = by_name.get(row[0]), by_name.get(row[1])
            if a is not None and b is not None:
                rows.append((a, b, row[2] == "0"))  # target 0 = two genuine = same writer's signature
    if not rows:
        raise DataError(f"{path}: none of its pairs name images of these items")
    a, b, same = (np.asarray(x) for x in zip(*rows))
    pair_writer = items.attributes["writer"][a]
    emb = embed_batches(model, items)
    with torch.no_grad():
        native = model.comparator(emb[torch.from_numpy(a)], emb[torch.from_numpy(b)]).numpy()
    scores = -native if model.comparator.is_distance else native

    def select(ws: set[int] | None) -> np.ndarray:
        return np.ones(len(a), bool) if ws is None else np.isin(pair_writer, sorted(ws))

    if threshold is None:
        cal = select(calibration_writers)
        _, t = calc_best_accuracy(scores[cal], same[cal])
    else:
        t = -threshold if model.comparator.is_distance else threshold
    test = select(writers)
    accuracy = float(((scores[test] >= t) == same[test]).mean())
    return {
        "accuracy": accuracy,
        "pairs": int(test.sum()),
        "threshold": float(-t if model.comparator.is_distance else t),
    }
