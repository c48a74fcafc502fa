"""Score fusion of matchers (the twin's score and Bozorth3's): each normalised with the mean and
standard deviation of its scores on the fitting trials (z-scores), then combined by the **sum
rule** (mean of the z-scores) or a **logistic** regression fitted on those trials (scikit-learn),
whose output is the log-odds of a genuine trial. The fit is stored as JSON (no pickles).

Example::

    >>> import numpy as np
    >>> g = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    >>> r = np.random.default_rng(0)
    >>> scores = {"twin": g + r.normal(0, .8, 100), "bozorth3": 30 * g + r.normal(10, 20, 100)}
    >>> fusion = ScoreFusion.fit(scores, g, method="logistic")
    >>> fusion.combine(scores).shape, sorted(fusion.to_dict()["matchers"])
    ((100,), ['bozorth3', 'twin'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from twinnet.errors import DataError

Method = Literal["sum", "logistic"]


@dataclass
class ScoreFusion:
    """Per-matcher z-normalisation (``mean``, ``std``) and the combination: equal weights (sum
    rule) or logistic ``weights`` and ``bias``. Scores are similarities (greater = more alike)."""

    matchers: list[str]
    mean: dict[str, float]
    std: dict[str, float]
    method: Method = "logistic"
    weights: dict[str, float] = field(default_factory=dict)
    bias: float = 0.0

    @classmethod
    def fit(cls, scores: dict[str, np.ndarray], genuine: np.ndarray, method: Method = "logistic",
            c: float = 1.0) -> ScoreFusion:  # fmt: skip
        """Fit on trials ``scores[matcher][i]`` with ``genuine[i]`` (training or calibration pairs)."""
        genuine = np.asarray(genuine, bool)
        if not scores:
            raise DataError("score fusion needs at least one matcher's scores")
        if genuine.all() or not genuine.any():
            raise DataError("score fusion is fitted on genuine and impostor trials")
        names = sorted(scores)
        for name in names:
            if len(scores[name]) != len(genuine):
                raise DataError(f"fusion: {len(scores[name])} {name} scores for {len(genuine)} trials")
            if not np.isfinite(np.asarray(scores[name], float)).all():
                raise DataError(f"fusion: {name} scores are not all finite")
        mean = {n: float(np.mean(scores[n])) for n in names}
        std = {n: float(np.std(scores[n])) or 1.0 for n in names}
        fusion = cls(names, mean, std, method)
        if method == "sum":
            fusion.weights = {n: 1.0 / len(names) for n in names}
        elif method == "logistic":
            from sklearn.linear_model import LogisticRegression

            z = fusion.normalised(scores)
            model = LogisticRegression(C=c, class_weight="balanced").fit(z, genuine)
            fusion.weights = {n: float(w) for n, w in zip(names, model.coef_[0])}
            fusion.bias = float(model.intercept_[0])
        else:
            raise DataError(f"fusion method must be 'sum' or 'logistic', not {method!r}")
        return fusion

    def normalised(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in self.matchers if n not in scores]
        if missing:
            raise DataError(f"fusion: no scores for {', '.join(missing)}")
        return np.stack([(np.asarray(scores[n], float) - self.mean[n]) / self.std[n] for n in self.matchers], 1)

    def combine(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """The fused score of each trial (greater = more alike)."""
        z = self.normalised(scores)
        return z @ np.array([self.weights[n] for n in self.matchers]) + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {"format": "twinnet.score_fusion", "version": 1, "method": self.method, "matchers": self.matchers,
                "mean": self.mean, "std": self.std, "weights": self.weights, "bias": self.bias}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "fusion") -> ScoreFusion:
        try:
            if data.get("format") != "twinnet.score_fusion":
                raise KeyError("format")
            names = [str(n) for n in data["matchers"]]
            return cls(names, {n: float(data["mean"][n]) for n in names}, {n: float(data["std"][n]) for n in names},
                       data["method"], {n: float(data["weights"][n]) for n in names}, float(data["bias"]))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: not a score fusion file (field {err})") from None

    def save(self, path: str | Path) -> Path:
        """Write the fit as JSON (temp file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreFusion:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: cannot read the score fusion ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: not a score fusion file")
        return cls.from_dict(data, str(path))
