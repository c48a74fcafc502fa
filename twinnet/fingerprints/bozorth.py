"""The anchor: NIST's NBIS, MINDTCT minutiae and the Bozorth3 matcher, through ``nbis-py`` 0.1.3
(the ``fingerprints`` extra; the newer ``nbis-python`` does not load on every C library).

Bozorth3 compares two minutiae sets pair by pair (a score, greater = more alike, about 40 and up
for a match); it has no fixed-length template a vector index can search, so 1:N identification
costs N comparisons.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinnet.data.pairs import Pairs
from twinnet.errors import ConfigError, DataError


def _nbis() -> Any:
    try:
        import nbis
    except (ImportError, OSError) as err:
        raise ConfigError(f"the Bozorth3 anchor needs nbis-py: pip install 'twinnet[fingerprints]' ({err})") from None
    return nbis


class Bozorth3:
    """MINDTCT + Bozorth3 on image files; one extractor per resolution (MINDTCT's ``ppi``)."""

    def __init__(self, default_dpi: float = 500.0) -> None:
        self.nbis = _nbis()
        self.default_dpi = float(default_dpi)
        self._extractors: dict[float, Any] = {}

    def _extractor(self, dpi: float) -> Any:
        if dpi not in self._extractors:
            settings = self.nbis.NbisExtractorSettings(min_quality=0.0, get_center=False, check_fingerprint=False,
                                                       compute_nfiq2=False, ppi=float(dpi))  # fmt: skip
            self._extractors[dpi] = self.nbis.new_nbis_extractor(settings)
        return self._extractors[dpi]

    def template(self, path: str | Path, dpi: float | None = None) -> Any:
        """The minutiae of one image file (PNG, BMP, TIF…), read at ``dpi`` (default ``default_dpi``)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot read the image ({err.strerror or err})") from None
        try:
            return self._extractor(float(dpi or self.default_dpi)).extract_minutiae(data)
        except Exception as err:  # the binding raises its own error types for undecodable images
            raise DataError(f"{path}: MINDTCT could not extract minutiae ({err})") from None

    def templates(self, paths: Sequence[str | Path], dpis: Sequence[float] | None = None) -> list[Any]:
        return [self.template(p, None if dpis is None or not dpis[i] else dpis[i]) for i, p in enumerate(paths)]

    @staticmethod
    def compare(a: Any, b: Any) -> int:
        """Bozorth3's score of two minutiae sets."""
        return int(a.compare(b))

    def score_pairs(self, templates: Sequence[Any], pairs: Pairs) -> np.ndarray:
        """Bozorth3 scores of index ``pairs`` into ``templates`` (float, greater = more alike)."""
        return np.array([self.compare(templates[i], templates[j]) for i, j in zip(pairs.a, pairs.b)], float)

    def identify(self, query: Any, gallery: Sequence[Any]) -> np.ndarray:
        """Scores of ``query`` against every template of ``gallery`` (1:N by N comparisons)."""
        return np.array([self.compare(query, t) for t in gallery], float)

    def ms_per_comparison(self, templates: Sequence[Any], n: int = 2000, seed: int = 0) -> float:
        """Median-free mean wall time of one comparison over ``n`` random pairs, in milliseconds."""
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, len(templates), n), rng.integers(0, len(templates), n)
        start = time.perf_counter()
        for a, b in zip(i.tolist(), j.tolist()):
            templates[a].compare(templates[b])
        return (time.perf_counter() - start) / n * 1000.0

    @staticmethod
    def minutiae_count(template: Any) -> int:
        return len(template.get())
