"""The batch a tracking pair plan builds and a score-map loss consumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from twinnet.training.batch import Batch


@dataclass
class TrackingPairBatch(Batch):
    """``n`` training pairs: ``exemplars (n, 3, 127, 127)`` and ``searches (n, 3, 255, 255)``,
    images in [0, 1]; ``offsets (n, 2)`` is where the target's centre lies in each search image,
    in pixels ``(dx, dy)`` from the search image's centre (non-zero where the crop was shifted);
    ``sizes (n, 2)`` the target's width and height in each search image, in pixels (what the box
    heads regress; SiamFC's loss reads the centre only). ``present (n,)`` (bool) says whether the
    search image has the exemplar's target at all: False for a negative pair, whose search image is
    centred on another object (its ``offsets`` and ``sizes`` are then that object's, and every
    loss's label assignment makes the whole search image background). ``seed`` seeds what a loss draws at random
    for this batch (which anchors the SiamRPN loss samples); the plan draws it from its own stream."""

    exemplars: torch.Tensor
    searches: torch.Tensor
    offsets: torch.Tensor
    sizes: torch.Tensor
    present: torch.Tensor
    seed: int = 0

    @property
    def n_items(self) -> int:
        return 2 * len(self.offsets)

    def to(self, device: torch.device) -> TrackingPairBatch:
        return replace(
            self,
            exemplars=self.exemplars.to(device, non_blocking=True),
            searches=self.searches.to(device, non_blocking=True),
            offsets=self.offsets.to(device),
            sizes=self.sizes.to(device),
            present=self.present.to(device),
        )
