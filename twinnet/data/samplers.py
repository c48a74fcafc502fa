"""Class-balanced P×K batches for in-batch mining."""

from __future__ import annotations

import numpy as np

from twinnet.errors import DataError
from twinnet.runtime import Stream, numpy_rng


class PKBatchSampler:
    """Batches of ``classes_per_batch`` (P) classes × ``items_per_class`` (K) items.

    Each epoch walks through the classes in a fresh seeded order, so every class appears about
    equally often; items are drawn without replacement where a class has at least K items.
    Only classes with at least ``min_items`` items take part (by default two: a lone item has no
    positive). With ``min_items=1`` a one-item class yields K copies of its item, which differ
    only through augmentation (instance positives).

    Epoch ``e`` is drawn from the stream ``(seed, Stream.PK_BATCHES, e)``, so it is the same batches
    whenever it is drawn (a resumed run draws what the uninterrupted one would have).
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        items_per_class: int,
        batches_per_epoch: int,
        seed: int = 0,
        min_items: int = 2,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        classes, counts = np.unique(labels, return_counts=True)
        usable = classes[counts >= min_items]
        if len(usable) < 2:
            raise DataError("P×K batches need at least two classes with two or more items")
        if items_per_class < 2:
            raise DataError("items_per_class (K) must be at least 2")
        self.members = {int(c): np.nonzero(labels == c)[0] for c in usable}
        self.classes = usable
        self.p = min(classes_per_batch, len(usable))
        self.k = items_per_class
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = numpy_rng(self.seed, Stream.PK_BATCHES, epoch)
        need = self.batches_per_epoch * self.p
        order = np.concatenate([rng.permutation(self.classes) for _ in range(-(-need // len(self.classes)))])
        batches = []
        for i in range(self.batches_per_epoch):
            chosen = order[i * self.p : (i + 1) * self.p]
            if len(set(chosen.tolist())) < len(chosen):  # a wrap-around repeated a class
                chosen = rng.choice(self.classes, self.p, replace=False)
            idx = []
            for c in chosen:
                members = self.members[int(c)]
                idx.append(rng.choice(members, self.k, replace=len(members) < self.k))
            batches.append(np.concatenate(idx))
        return batches

    def shard(self, batch: np.ndarray, rank: int, size: int) -> np.ndarray:
        """Process ``rank``'s part of a batch of :meth:`epoch` when ``size`` processes train on it
        together: its own classes (a contiguous share of the P classes, all K items of each), so
        no two processes hold the same class and together they hold the whole batch. The batches
        stay those of one process with the same seed, whatever the number of processes."""
        if size == 1:
            return batch
        blocks = np.array_split(np.arange(len(batch) // self.k), size)[rank]
        return batch[(blocks[:, None] * self.k + np.arange(self.k)[None, :]).reshape(-1)]
