"""Open-set identification through a gallery, as at a turnstile (``openset``).

Of the people in a labelled folder, a seeded share (``known``) is enrolled in a fresh
:class:`~twinnet.gallery.Gallery` with ``enrol`` images each (through the gallery's own embedding and
index, what ``twinnet gallery enroll`` does); every other image of an enrolled person, and every image
of the people never enrolled, is a query (``identify``, what ``twinnet gallery identify`` does).

- **rank-1**: share of the enrolled people's queries whose best match is their own identity;
- **DIR@FAR=f** (detection and identification rate): at the threshold where a share ``f`` of the
  never-enrolled people's queries would be accepted as someone (false alarms), the share of the
  enrolled people's queries that are accepted *and* identified correctly. The threshold is the
  one that gives this false-alarm rate on these queries (the DIR–FAR curve, like TAR@FAR); the
  figures at the model's stored operating point are reported beside it when it has one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream, numpy_rng


def open_set_rates(
    known_similarity: np.ndarray, known_correct: np.ndarray, unknown_similarity: np.ndarray,
    far_targets: Sequence[float] = (0.01, 0.1),
) -> dict[str, float]:  # fmt: skip
    """Rank-1 and DIR at each false-alarm rate, from each query's best-match similarity (larger =
    closer): ``known_correct`` says whether an enrolled person's best match was themselves."""
    known_similarity = np.asarray(known_similarity, float)
    known_correct = np.asarray(known_correct, bool)
    unknown = np.sort(np.asarray(unknown_similarity, float))[::-1]  # largest first
    if len(known_similarity) == 0 or len(unknown) == 0:
        raise DataError("open-set identification needs queries of enrolled and of never-enrolled people")
    out = {"rank1": float(known_correct.mean())}
    for far in far_targets:
        allowed = int(np.floor(far * len(unknown)))  # false alarms allowed at this rate
        # accept similarity > the (allowed+1)-th largest unknown: at most `allowed` false alarms
        threshold = unknown[allowed] if allowed < len(unknown) else -np.inf
        out[f"dir@far={far:g}"] = float((known_correct & (known_similarity > threshold)).mean())
        out[f"dir@far={far:g}_threshold"] = float(threshold)
    return out


@register_protocol("openset")
class OpenSetProtocol(EvaluationProtocol):
    """Enrol ``enrol`` images of a ``known`` share of the people in a gallery; identify every other
    image of them and every image of the rest: rank-1 and DIR@FAR (primary: DIR@FAR=1%)."""

    primary_metric = "dir@far=0.01"
    greater_is_better = True
    needs = "labels"
    summary = "open-set identification through a gallery: rank-1, DIR@FAR=1% and 10% (one image enrolled per person)"

    def __init__(self, known: float = 0.5, enrol: int = 1, seed: int = 0,
                 far_targets: Sequence[float] = (0.01, 0.1), gallery: str | None = None,
                 index: str = "flat") -> None:  # fmt: skip
        if not 0 < known < 1:
            raise ValueError(f"known must be a share in (0, 1), not {known!r}")
        if isinstance(enrol, bool) or not isinstance(enrol, int) or enrol < 1:
            raise ValueError(f"enrol must be a whole number of at least 1, not {enrol!r}")
        self.known, self.enrol, self.seed = float(known), enrol, seed
        self.far_targets = tuple(far_targets)
        self.gallery, self.index = gallery, index

    def split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item indices: ``(enrolled, known_queries, unknown_queries)``. Only people with more than
        ``enrol`` images can be enrolled (they need a query left)."""
        rng = numpy_rng(self.seed, Stream.OPEN_SET)
        classes, counts = np.unique(labels, return_counts=True)
        eligible = classes[counts > self.enrol]
        n_known = round(self.known * len(classes))
        if n_known < 2 or len(eligible) < n_known or len(classes) - n_known < 1:
            raise DataError(f"open-set identification: {len(classes)} people, {len(eligible)} with more than "
                            f"{self.enrol} image(s); it needs {max(2, n_known)} such people to enrol and some "
                            "people never enrolled")  # fmt: skip
        known = set(rng.choice(eligible, n_known, replace=False).tolist())
        enrolled, known_q, unknown_q = [], [], []
        for c in classes:
            members = np.nonzero(labels == c)[0]
            if int(c) in known:
                members = members[rng.permutation(len(members))]
                enrolled += members[: self.enrol].tolist()
                known_q += members[self.enrol :].tolist()
            else:
                unknown_q += members.tolist()
        return np.asarray(enrolled), np.asarray(known_q), np.asarray(unknown_q)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        from twinnet.gallery import Gallery

        items = data.items
        enrolled, known_q, unknown_q = self.split(items.labels)
        with tempfile.TemporaryDirectory(prefix="twinnet-openset-") as tmp:
            where = Path(self.gallery) if self.gallery else Path(tmp) / "gallery"
            with Gallery.create(where, model, index=self.index) as g:
                for c in np.unique(items.labels[enrolled]):
                    idx = enrolled[items.labels[enrolled] == c]
                    g.enroll(items.class_names[int(c)], items.load(idx), sources=[items.names[i] for i in idx])
                best = {}
                for name, queries in (("known", known_q), ("unknown", unknown_q)):
                    found = []
                    for start in range(0, len(queries), 256):
                        found += g.identify_batch(items.load(queries[start : start + 256]), k=1)
                    best[name] = found
        orientation = model.comparator.orientation
        known_sim = orientation.to_similarity(np.array([r.matches[0].value for r in best["known"]]))
        unknown_sim = orientation.to_similarity(np.array([r.matches[0].value for r in best["unknown"]]))
        correct = np.array([r.matches[0].identity == items.class_names[int(items.labels[i])]
                            for r, i in zip(best["known"], known_q)])  # fmt: skip
        metrics: dict[str, Any] = {
            "enrolled_people": len(np.unique(items.labels[enrolled])), "enrolled_images": len(enrolled),
            "unknown_people": len(np.unique(items.labels[unknown_q])), "known_queries": len(known_q),
            "unknown_queries": len(unknown_q),
            **open_set_rates(known_sim, correct, unknown_sim, self.far_targets),
        }  # fmt: skip
        threshold = best["known"][0].threshold
        if threshold is not None:  # at the model's stored operating point (what the gallery decides with)
            accepted = np.array([r.identity is not None for r in best["known"]])
            metrics["operating_point_dir"] = float((accepted & correct).mean())
            metrics["operating_point_far"] = float(np.mean([r.identity is not None for r in best["unknown"]]))
        return self.result(metrics)
