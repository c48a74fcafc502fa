"""The FVC protocol for fingerprint verification (Maio et al., FVC2002), ``fvc``.

- **genuine** trials: every pair of impressions of a finger;
- **impostor** trials (``impostors="fvc"``): the first impression of each finger against the first
  impression of every other finger *of the same database* (sensor); ``impostors="all"``: every
  impression against every impression of the other fingers of the same database (the sets here
  are small, so this variant gives many more impostor trials).

Figures, from scores where greater means more alike (similarities; a distance is turned around):
**EER**, **FMR100** and **FMR1000** (the lowest false non-match rate at a false-match rate of at
most 1% and 0.1%), **ZeroFMR** (the lowest false non-match rate with no false match), pooled over
the databases and per database. They are points of the error curves of the scored trials, like
TAR@FAR, and depend on no stored threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.metrics import calc_eer
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol

Impostors = Literal["fvc", "all"]


def item_fields(items: ItemSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(finger labels, impression numbers, database names)`` of fingerprint items; items without
    ``impression`` are numbered in their order within a finger, without ``database`` all in one."""
    labels = np.asarray(items.labels)
    impression = items.attributes.get("impression")
    if impression is None:
        impression = np.zeros(len(labels), np.int64)
        for label in np.unique(labels):
            where = np.flatnonzero(labels == label)
            impression[where] = np.arange(1, len(where) + 1)
    database = items.attributes.get("database")
    if database is None:
        database = np.array(["all"] * len(labels))
    return labels, np.asarray(impression), np.asarray(database).astype(str)


def fvc_pairs(labels: Sequence[int] | np.ndarray, impressions: Sequence[int] | np.ndarray,
              databases: Sequence[str] | np.ndarray | None = None, impostors: Impostors = "fvc") -> Pairs:  # fmt: skip
    """The FVC trials as index pairs (genuine first, then impostor; ``same`` says which).

    For 10 fingers × 8 impressions of one database: 10·C(8,2) = 280 genuine and C(10,2) = 45
    impostor pairs (``impostors="fvc"``), or C(80,2) − 280 = 2880 (``"all"``)."""
    labels, impressions = np.asarray(labels), np.asarray(impressions)
    databases = np.zeros(len(labels), int) if databases is None else np.asarray(databases)
    if not len(labels) == len(impressions) == len(databases):
        raise DataError(f"{len(labels)} labels, {len(impressions)} impressions and {len(databases)} databases")
    if impostors not in ("fvc", "all"):
        raise DataError(f"impostors must be 'fvc' or 'all', not {impostors!r}")
    a: list[int] = []
    b: list[int] = []
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        where = where[np.argsort(impressions[where], kind="stable")]
        i, j = np.triu_indices(len(where), 1)
        a += where[i].tolist()
        b += where[j].tolist()
    n_genuine = len(a)
    for db in np.unique(databases):
        in_db = np.flatnonzero(databases == db)
        if impostors == "fvc":
            firsts = []
            for label in np.unique(labels[in_db]):
                where = in_db[labels[in_db] == label]
                firsts.append(int(where[np.argmin(impressions[where])]))
            chosen = np.array(firsts, np.int64)
            i, j = np.triu_indices(len(chosen), 1)
            a += chosen[i].tolist()
            b += chosen[j].tolist()
        else:
            i, j = np.triu_indices(len(in_db), 1)
            other = labels[in_db[i]] != labels[in_db[j]]
            a += in_db[i][other].tolist()
            b += in_db[j][other].tolist()
    same = np.zeros(len(a), bool)
    same[:n_genuine] = True
    return Pairs(np.array(a, np.int64), np.array(b, np.int64), same)


def fnmr_at_fmr(similarity: np.ndarray, genuine: np.ndarray, fmr: float) -> float:
    """The lowest false non-match rate at a false-match rate of at most ``fmr`` (0: ZeroFMR): a
    trial matches when its similarity is above the threshold; with ``k = ⌊fmr·impostors⌋`` false
    matches allowed, the threshold sits at the (k+1)-th highest impostor score."""
    s, g = np.asarray(similarity, float), np.asarray(genuine, bool)
    impostor = np.sort(s[~g])[::-1]
    if not g.any() or not len(impostor):
        raise DataError("FNMR at an FMR needs genuine and impostor trials")
    allowed = int(np.floor(fmr * len(impostor) + 1e-9))
    if allowed >= len(impostor):
        return 0.0
    return float(np.mean(s[g] <= impostor[allowed]))


def fvc_metrics(similarity: np.ndarray, genuine: np.ndarray) -> dict[str, float]:
    """EER, FMR100, FMR1000 and ZeroFMR of similarities, with the trial counts."""
    s, g = np.asarray(similarity, float), np.asarray(genuine, bool)
    if not np.isfinite(s).all():
        raise DataError("FVC figures need finite scores")
    if g.all() or not g.any():
        raise DataError("FVC figures need genuine and impostor trials")
    return {"eer": calc_eer(s, g)[0], "fmr100": fnmr_at_fmr(s, g, 0.01), "fmr1000": fnmr_at_fmr(s, g, 0.001),
            "zerofmr": fnmr_at_fmr(s, g, 0.0), "genuine": int(g.sum()), "impostors": int((~g).sum())}  # fmt: skip


def fvc_report(similarity: np.ndarray, pairs: Pairs, databases: np.ndarray) -> dict[str, Any]:
    """:func:`fvc_metrics` pooled over all trials and per database (of each pair's first item)."""
    databases = np.asarray(databases).astype(str)
    pooled = fvc_metrics(similarity, pairs.same)
    per = {}
    for db in np.unique(databases[pairs.a]):
        where = databases[pairs.a] == db
        if pairs.same[where].any() and not pairs.same[where].all():
            per[str(db)] = fvc_metrics(np.asarray(similarity)[where], pairs.same[where])
    return {**pooled, "per_database": per}


@register_protocol("fvc")
class FVCProtocol(EvaluationProtocol):
    """FVC's fingerprint verification trials: genuine = every pair of a finger's impressions;
    impostor = first impressions of different fingers of one database (``impostors: fvc``) or
    every cross-finger pair within a database (``all``); primary metric the pooled EER."""

    primary_metric = "eer"
    greater_is_better = False
    needs = "labels"
    summary = "FVC fingerprint trials: EER, FMR100, FMR1000, ZeroFMR, pooled and per database (sensor)"

    def __init__(self, impostors: Impostors = "fvc", seed: int = 0) -> None:
        """``seed`` is accepted as every protocol's (validation passes one) and changes nothing: the
        FVC trials are fixed by the data."""
        if impostors not in ("fvc", "all"):
            raise ValueError(f"impostors must be 'fvc' or 'all', not {impostors!r}")
        self.impostors: Impostors = impostors

    def pairs_of(self, items: ItemSet) -> tuple[Pairs, np.ndarray]:
        labels, impressions, databases = item_fields(items)
        items.require_min_per_class(2, "genuine FVC trials")
        return fvc_pairs(labels, impressions, databases, self.impostors), databases

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        from twinnet.protocols.verification import pair_values

        pairs, databases = self.pairs_of(data.items)
        similarity = model.comparator.orientation.to_similarity(pair_values(model, data.items, pairs))
        report = fvc_report(similarity, pairs, databases)
        per = report.pop("per_database")
        flat = {f"{db}.{k}": v for db, figures in per.items() for k, v in figures.items()}
        return self.result({"impostor_pairs": self.impostors, **report, **flat}, per_database=per)
