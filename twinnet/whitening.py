"""Whitening of embeddings, fitted on the training items after training and saved with the model.

A trained encoder's embeddings are rarely isotropic: they share a common offset (e.g. a ReLU before
the last normalisation puts every embedding in one orthant, so all cosines are large), and most of
the variation *within* one identity (a room, a microphone, a pen) lies along a few directions. A
whitening ``z ↦ (z − μ) M`` fitted once on the training embeddings removes the offset and scales
those directions down, so that comparing two embeddings looks at what separates identities.
It is the classic back end of speaker verification (length normalisation, centring, WCCN: Hatch
et al. 2006, "Within-class covariance normalization for SVM-based speaker recognition";
Garcia-Romero & Espy-Wilson 2011 for length normalisation around it).

The model applies it to its embeddings as they are (L2-normalised if the model normalises) and
normalises the result again: ``embed = norm(whiten(norm(encoder(x))))``. Before it is fitted a
whitening is the identity, so training (and validation during training) sees the plain
embeddings; the trainer fits it after restoring the best epoch
(:func:`twinnet.embedding.fit_whitening`), then validates and calibrates the
stored thresholds on whitened embeddings (:meth:`twinnet.train.Trainer.fit`).

Kinds (``model.whitening.name``; adding one is a subclass with a ``solve`` and one
``@WHITENINGS.register(name)``):

- ``centre``: subtract the mean of the training embeddings (``M = I``); needs no labels.
- ``wccn``: centre, then ``M = S^(-1/2)`` for ``S = (1 − a) W + a (tr W / d) I``, with ``W`` the
  pooled within-class covariance of the training embeddings (each item about its class mean,
  divided by the number of items: scikit-learn's ``LinearDiscriminantAnalysis.covariance_``) and
  ``a`` the ``shrinkage`` toward a multiple of the identity (``a = 1`` is centring alone, scaled).
  Needs class labels: at least two classes of at least two items.

Example::

    >>> import torch
    >>> w = WHITENINGS.get("wccn")(dim=3, shrinkage=0.5)
    >>> z = torch.randn(40, 3); labels = torch.arange(40) % 4
    >>> w.fit(z, labels.numpy())
    >>> w(z).shape, bool(w.fitted)
    (torch.Size([40, 3]), True)
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from twinnet.errors import ConfigError, DataError
from twinnet.registry import Registry, check_params

#: Whitening kinds (:class:`Whitening` subclasses), by name (``model.whitening.name``).
WHITENINGS: Registry[Whitening] = Registry("whitening")


class Whitening(nn.Module):
    """``z ↦ (z − mean) @ matrix``, the identity until :meth:`fit` is called.

    Its tensors (``mean``, ``matrix``, ``fitted``) are buffers, so they are saved and loaded with
    the model's weights and change its fingerprint (galleries of the unwhitened model are refused).

    Args:
        dim: the size of the embeddings.
        max_items: fit on at most this many training items (a seeded random subset of them).
    """

    needs_labels: bool = False
    mean: torch.Tensor
    matrix: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int, max_items: int = 20000) -> None:
        super().__init__()
        if max_items < 2:
            raise ValueError(f"max_items must be at least 2, not {max_items}")
        self.max_items = int(max_items)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            return z
        return (z - self.mean.to(z.dtype)) @ self.matrix.to(z.dtype)

    def check_labels(self, labels: np.ndarray | None, what: str = "the training items") -> None:
        """Raise a ConfigError now (before training) if ``labels`` cannot fit this whitening."""
        if not self.needs_labels:
            return
        if labels is None:
            raise ConfigError(f"model.whitening: {type(self).__name__} needs class labels, and {what} have none")
        _, counts = np.unique(np.asarray(labels), return_counts=True)
        if int((counts >= 2).sum()) < 2:
            raise ConfigError(f"model.whitening: {type(self).__name__} needs at least two classes of at least "
                              f"two items; {what} have {int((counts >= 2).sum())}")  # fmt: skip

    def fit(self, embeddings: torch.Tensor | np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fit on ``(n, dim)`` embeddings of the training items (and their class labels)."""
        x = np.asarray(torch.as_tensor(embeddings).detach().cpu().double().numpy())
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0] or len(x) < 2:
            raise DataError(f"whitening: expected at least two {self.mean.shape[0]}-dimensional embeddings, "
                            f"got shape {tuple(x.shape)}")  # fmt: skip
        if not np.isfinite(x).all():
            raise DataError("whitening: the embeddings contain NaN or infinite values")
        self.check_labels(labels, "the embeddings given")
        mean, matrix = self.solve(x, None if labels is None else np.asarray(labels))
        self.mean.copy_(torch.from_numpy(mean))
        self.matrix.copy_(torch.from_numpy(matrix))
        self.fitted.fill_(True)

    @abstractmethod
    def solve(self, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, matrix)`` for embeddings ``x`` (float64)."""


@WHITENINGS.register("centre")
class Centring(Whitening):
    """Subtract the mean training embedding."""

    def solve(self, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return x.mean(0), np.eye(x.shape[1])


@WHITENINGS.register("wccn")
class WCCN(Whitening):
    """Centre, then scale by the inverse square root of the shrunk within-class covariance.

    Args:
        dim: the size of the embeddings.
        shrinkage: ``a`` in ``S = (1 − a) W + a (tr W / d) I``, in ``(0, 1]``; with few identities
            ``W`` is poorly estimated (a ReLU encoder's is singular), and shrinking it keeps the
            directions it knows little about.
        max_items: fit on at most this many training items.
    """

    needs_labels = True

    def __init__(self, dim: int, shrinkage: float = 0.5, max_items: int = 20000) -> None:
        super().__init__(dim, max_items)
        if not 0 < shrinkage <= 1:
            raise ValueError(f"shrinkage must be in (0, 1], not {shrinkage}")
        self.shrinkage = float(shrinkage)

    def solve(self, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        assert labels is not None  # check_labels ran
        return x.mean(0), inverse_sqrt(shrunk(within_class_covariance(x, labels), self.shrinkage))


def within_class_covariance(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pooled within-class covariance: ``Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ / n``."""
    _, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((inverse.max() + 1, x.shape[1]))
    np.add.at(sums, inverse, x)
    centred = x - (sums / np.bincount(inverse)[:, None])[inverse]
    return centred.T @ centred / len(x)


def shrunk(covariance: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 − a) C + a (tr C / d) I``."""
    d = covariance.shape[0]
    scale = np.trace(covariance) / d
    if scale <= 0:
        raise DataError("whitening: the embeddings do not vary within classes (all items of a class are equal)")
    return (1 - shrinkage) * covariance + shrinkage * scale * np.eye(d)


def inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric ``C^(-1/2)`` of a symmetric positive definite ``C``."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors / np.sqrt(values)) @ vectors.T


def build_whitening(name: str, params: dict[str, Any], dim: int) -> Whitening:
    """The whitening ``model.whitening`` names, for ``dim``-dimensional embeddings."""
    factory = WHITENINGS.get(name, field="model.whitening")
    if "dim" in params:
        raise ConfigError("model.whitening.params: dim is the model's embedding size, not a parameter")
    check_params(factory, params, field="model.whitening.params")
    try:
        return factory(dim=dim, **params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model.whitening.params: {err}") from None


__all__ = ["WCCN", "WHITENINGS", "Centring", "Whitening", "build_whitening", "within_class_covariance"]
