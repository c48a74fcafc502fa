"""Bit packing round trips and Hamming distances against a plain NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from twinnet.codes.bits import hamming, hamming_matrix, pack_bits, signs, unpack_bits
from twinnet.errors import DataError


def reference_hamming(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    """Hamming distance as the count of differing booleans, no packing involved."""
    return (a_bits[:, None, :] != b_bits[None, :, :]).sum(-1)


@pytest.mark.parametrize("bits", [8, 64, 128, 136])
def test_pack_unpack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    on = rng.random((7, bits)) < 0.5
    codes = pack_bits(on)
    assert codes.dtype == np.uint8 and codes.shape == (7, bits // 8)
    assert np.array_equal(unpack_bits(codes), on)
    assert np.array_equal(signs(codes), np.where(on, 1.0, -1.0))
    # the first bit is the most significant bit of the first byte (FAISS reads codes this way)
    first = np.zeros((1, bits), bool)
    first[0, 0] = True
    assert pack_bits(first)[0, 0] == 0x80
    # values: positive → 1
    assert np.array_equal(pack_bits(np.where(on, 0.3, -0.2)), codes)


def test_hamming_matches_the_reference() -> None:
    rng = np.random.default_rng(0)
    a_bits, b_bits = rng.random((9, 128)) < 0.5, rng.random((13, 128)) < 0.3
    expected = reference_hamming(a_bits, b_bits)
    matrix = hamming_matrix(pack_bits(a_bits), pack_bits(b_bits), rows=4)  # several blocks
    assert matrix.dtype == np.int64 and np.array_equal(matrix, expected)
    assert np.array_equal(hamming(pack_bits(a_bits[:5]), pack_bits(b_bits[:5])), expected[np.arange(5), np.arange(5)])
    # and from signs: (bits - a·b) / 2
    sa, sb = signs(pack_bits(a_bits)), signs(pack_bits(b_bits))
    assert np.array_equal((128 - sa @ sb.T) / 2, expected)


def test_bad_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_bits(np.ones((2, 12), bool))
    with pytest.raises(DataError, match="uint8"):
        hamming_matrix(np.zeros((2, 4), np.int32), np.zeros((2, 4), np.uint8))
    with pytest.raises(DataError, match="cannot be compared"):
        hamming_matrix(np.zeros((2, 4), np.uint8), np.zeros((2, 8), np.uint8))
