"""Compact codes for galleries too large for float templates: binary codes compared by Hamming
distance (SimHash, ITQ, or learned with the ``hashing`` loss) and int8 scalar quantisation.

- :mod:`twinnet.codes.bits`: packing, unpacking and Hamming distances on packed codes;
- :mod:`twinnet.codes.projection`: SimHash and ITQ projections, :class:`Int8Quantizer`;
- :mod:`twinnet.codes.comparator`: the ``hamming`` comparator (registered), which owns the projection;
- :func:`with_codes`: any trained model's embeddings hashed after the fact, the projection stored
  with the model.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from twinnet.codes.bits import hamming, hamming_matrix, pack_bits, signs, unpack_bits
from twinnet.codes.comparator import HammingDistance
from twinnet.codes.projection import Int8Quantizer, itq_projection, simhash_projection

__all__ = [
    "HammingDistance", "Int8Quantizer", "hamming", "hamming_matrix", "itq_projection", "pack_bits",
    "signs", "simhash_projection", "unpack_bits", "with_codes",
]  # fmt: skip


def with_codes(
    model: Any, bits: int = 128, method: str = "itq", embeddings: np.ndarray | None = None, seed: int = 0
) -> Any:
    """A copy of ``model`` that compares by ``bits``-bit Hamming codes of its embeddings: the same
    encoder, a :class:`HammingDistance` comparator (fitted on ``embeddings`` for ``itq``), the config
    saying so, and no calibration (the old threshold was in another scale: calibrate the copy).
    ``twinnet.save`` then stores the projection in the model's weights."""
    if method in ("itq", "learned") and embeddings is None:
        raise ValueError(f"method {method!r} is fitted on training embeddings: pass embeddings")
    out = copy.deepcopy(model)
    # the float comparator the codes stand in for, where its name alone rebuilds it (no weights)
    rescore_with = None
    if model.config is not None and not model.comparator.has_weights:
        rescore_with = model.config.comparator.name
    comparator = HammingDistance(model.embedding_dim, bits, method, seed, rescore_with)
    if embeddings is not None:
        comparator.fit(embeddings)
    out.comparator = comparator.to(model.device)
    if out.config is not None:
        params = {"bits": bits, "method": method, "seed": seed, "rescore_with": rescore_with}
        out.config = out.config.model_copy(update={"comparator": out.config.comparator.model_copy(
            update={"name": "hamming", "params": params})})  # fmt: skip
    out.calibration, out.fingerprint, out.metrics = None, None, {}
    return out
