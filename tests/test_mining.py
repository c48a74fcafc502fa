"""Miners against brute-force loops."""

import itertools

import torch

from twinnet.compare import EuclideanDistance
from twinnet.mining import all_triplets, batch_hard_triplets, semi_hard_triplets


def _data(seed=0, n=14):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (n,), generator=g)
    return EuclideanDistance().pairwise(emb, emb), labels


def _set(t):
    return set(zip(*(x.tolist() for x in t)))


def test_all_triplets_brute_force():
    _, labels = _data()
    n = len(labels)
    expected = {
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[a] != labels[q]
    }
    assert _set(all_triplets(labels)) == expected


def test_batch_hard_brute_force():
    dist, labels = _data(1)
    a, p, n = batch_hard_triplets(dist, labels)
    for anchor, pos, neg in zip(a.tolist(), p.tolist(), n.tolist()):
        positives = [j for j in range(len(labels)) if j != anchor and labels[j] == labels[anchor]]
        negatives = [j for j in range(len(labels)) if labels[j] != labels[anchor]]
        assert dist[anchor, pos] == max(dist[anchor, j] for j in positives)
        assert dist[anchor, neg] == min(dist[anchor, j] for j in negatives)
    has_pos = {i for i in range(len(labels)) if (labels == labels[i]).sum() > 1}
    assert set(a.tolist()) == has_pos


def test_semi_hard_brute_force():
    dist, labels = _data(2)
    margin = 0.7
    n = len(labels)
    expected = {
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p
        and labels[a] == labels[p]
        and labels[a] != labels[q]
        and dist[a, p] < dist[a, q] < dist[a, p] + margin
    }
    assert _set(semi_hard_triplets(dist, labels, margin)) == expected
