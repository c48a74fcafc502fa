"""Tracking data as items: every frame of every sequence is an item, labelled by its sequence.

:class:`SequenceItems` keeps the sequences themselves (what the tracking protocol runs on) and, for
training, makes one crop per frame centred on the target (:meth:`SequenceItems.crops`): a square
of ``crop_size`` pixels at the scale where the target's exemplar region (SiamFC's context margin)
is ``exemplar_size`` pixels wide, padded with the frame's mean colour. The batch plan samples the
exemplar and the search image of a pair from these crops with random shifts and scales, so frames
are decoded once per run, not once per pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from twinnet.data.items import ItemSet
from twinnet.errors import DataError
from twinnet.tracking.geometry import center_of, context_side, crop
from twinnet.tracking.sequences import Sequence


@dataclass(eq=False)
class SequenceItems(ItemSet):
    """Frames of tracking sequences as items (``labels``: the sequence, ``frame``: the frame number
    within it); frames where the target is absent are items too, never drawn for training."""

    loads_whole_items: ClassVar[bool] = False

    sequences: list[Sequence] = field(default_factory=list)
    frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _crops: dict[tuple[int, int, float], torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_sequences(cls, sequences: Seq[Sequence]) -> SequenceItems:
        seqs = list(sequences)
        labels = np.concatenate([np.full(len(s), k, np.int64) for k, s in enumerate(seqs)]) if seqs else \
            np.zeros(0, np.int64)  # fmt: skip
        frame = np.concatenate([np.arange(len(s)) for s in seqs]) if seqs else np.zeros(0, np.int64)
        names = [f"{s.source}#{i + 1}" for s in seqs for i in range(len(s))]
        return cls(data=torch.zeros(len(labels), 0, dtype=torch.uint8), labels=labels,
                   class_names=[s.name for s in seqs], names=names, sequences=seqs, frame=frame)  # fmt: skip

    def load(self, indices: np.ndarray | Seq[int] | torch.Tensor) -> torch.Tensor:
        """Frames are not items of one size: a loss trains on them through the ``tracking_pairs``
        plan's crops (loss ``score_map_logistic`` or ``anchor_free``), never through whole-item batches."""
        raise DataError("tracking sequences train only with a tracking loss (loss.name: score_map_logistic or "
                        "anchor_free), whose batch plan crops exemplars and search images from the frames")  # fmt: skip

    @property
    def present(self) -> np.ndarray:
        """Per item: whether its frame has the target."""
        flags = [s.present for s in self.sequences]
        return np.concatenate(flags) if flags else np.zeros(0, bool)

    def _targets(self) -> Iterator[tuple[int, Sequence, int, np.ndarray]]:
        """``(row, sequence, frame, box)`` of every frame whose target is present, in row order."""
        row = 0
        for seq in self.sequences:
            present = seq.present
            for i in range(len(seq)):
                if present[i]:
                    assert seq.boxes is not None
                    yield row, seq, i, seq.boxes[i]
                row += 1

    def crops(self, crop_size: int, exemplar_size: int, context: float = 0.5) -> torch.Tensor:
        """``uint8 (N, 3, crop_size, crop_size)``: every frame cropped around its target at the
        scale where the exemplar region is ``exemplar_size`` pixels (zeros where it is absent).
        Made once and kept."""
        key = (crop_size, exemplar_size, context)
        if key not in self._crops:
            out = torch.zeros(len(self), 3, crop_size, crop_size, dtype=torch.uint8)
            for row, seq, i, box in self._targets():
                side = context_side(box[2], box[3], context) * crop_size / exemplar_size
                patch = crop(seq.frame(i), center_of(box), side, crop_size)
                out[row] = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))
            self._crops[key] = out
        return self._crops[key]

    def target_sizes(self, exemplar_size: int, context: float = 0.5) -> np.ndarray:
        """``(N, 2)``: every frame's target width and height in its crop (:meth:`crops`), in pixels of
        the scale where the exemplar region is ``exemplar_size`` pixels (zeros where it is absent)."""
        out = np.zeros((len(self), 2))
        for row, _, _, box in self._targets():
            w, h = box[2:]
            out[row] = np.array([w, h]) * (exemplar_size / context_side(w, h, context))
        return out

    def subset(self, indices: np.ndarray | Seq[int]) -> SequenceItems:
        """Whole sequences: those with a frame among ``indices`` (a split by class is a split by sequence)."""
        keep = sorted(set(self.labels[np.asarray(indices, dtype=np.int64)].tolist()))
        return SequenceItems.from_sequences([self.sequences[k] for k in keep])
