"""The ``tracking_pairs`` batch plan: exemplar/search pairs from sequences and still images.

A pair is two frames of one sequence at most ``max_gap`` frames apart, both with the target: the
exemplar is cropped around the target in the first (SiamFC's context margin, ``exemplar_size``
pixels), the search image around it in the second (``search_size`` pixels, the same scale). With
``stills`` (a COCO folder) a share ``stills_share`` of the pairs are one still image twice, under
different shifts, scales and colours (as DaSiamRPN trained on detection data). Each crop is
shifted by up to ``shift`` pixels (the search image) or ``exemplar_shift`` (the exemplar), scaled by
up to ``scale_jitter``, optionally mirrored (both crops alike) and colour-jittered, all with torch
ops on pre-made per-frame crops; the batch records where the target's centre lands in the search
image, which is where the loss puts the positives, and the target's size there (for the box heads).

Harder pairs (DaSiamRPN, Zhu et al. 2018), both off by default: a share ``negative_share`` of the
pairs are negative, their search image centred on another object (a frame of another sequence; for
a still, another box of the same COCO category, or any other box where the category has no other),
which the batch marks ``present = False`` so that every loss makes the whole search image
background; and with probability ``blur`` a still pair's search image (every pair's with
``blur_sequences``) is blurred by a Gaussian of σ drawn uniformly from ``blur_sigma`` (search-image
pixels). Neither draws from the stream while off, so the other pairs stay as they were.

Every draw of an epoch comes from one stream seeded by ``(seed, Stream.TRACKING_PAIRS, epoch)``, made
before the batch jobs run, so an epoch is the same batches whenever it is drawn. Each batch also
carries a seed for the loss's own draws (which anchors a box head's loss samples), from a child of
that stream (``Generator.spawn``), which leaves the stream's own draws as they were.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from twinnet.config import TrainConfig
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.errors import ConfigError, DataError
from twinnet.runtime import Stream, expand_data_path, numpy_rng
from twinnet.tracking.batch import TrackingPairBatch
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.sequences import read_coco_stills
from twinnet.training.plans import BATCH_PLANS, BatchJob, BatchPlan


def _number(value: Any, name: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"train.plan.{name}: must be a number in [{low:g}, {high:g}], not {value!r}")
    return float(value)


@BATCH_PLANS.register("tracking_pairs")
class TrackingPairsPlan(BatchPlan):
    """Exemplar/search pairs of tracking sequences (and still images), ``train.batch_size`` per
    step, ``train.samples_per_epoch`` per epoch (by default one per training frame)."""

    name = "tracking_pairs"

    def __init__(
        self,
        items: ItemSet,
        pairs: Pairs | None,
        config: TrainConfig,
        *,
        augment: Any = None,
        loss_name: str = "this loss",
        max_gap: int = 100,
        stills: str | None = None,
        stills_share: float = 0.0,
        exemplar_size: int = 127,
        search_size: int = 255,
        context: float = 0.5,
        shift: float = 24.0,
        exemplar_shift: float = 4.0,
        scale_jitter: float = 0.05,
        hflip: float = 0.5,
        colour: float = 0.2,
        gray: float = 0.05,
        negative_share: float = 0.0,
        blur: float = 0.0,
        blur_sigma: Any = (0.5, 2.0),
        blur_sequences: bool = False,
    ) -> None:
        super().__init__(items, pairs, config, augment=augment, loss_name=loss_name)
        if not isinstance(items, SequenceItems):
            raise ConfigError(f"loss {loss_name} trains from tracking sequences: give data.format: tracking "
                              "(a folder of sequence folders)")  # fmt: skip
        if pairs is not None:
            raise ConfigError(f"loss {loss_name} trains from tracking sequences, not a pairs file")
        self.max_gap = int(_number(max_gap, "max_gap", 0))
        self.stills_share = _number(stills_share, "stills_share", 0, 1)
        self.exemplar_size = int(_number(exemplar_size, "exemplar_size", 16))
        self.search_size = int(_number(search_size, "search_size", self.exemplar_size))
        self.context = _number(context, "context", 0)
        self.shift = _number(shift, "shift", 0, self.search_size / 4)
        self.exemplar_shift = _number(exemplar_shift, "exemplar_shift", 0, self.exemplar_size / 4)
        self.scale_jitter = _number(scale_jitter, "scale_jitter", 0, 0.5)
        self.hflip = _number(hflip, "hflip", 0, 1)
        self.colour = _number(colour, "colour", 0, 0.9)
        self.gray = _number(gray, "gray", 0, 1)
        self.negative_share = _number(negative_share, "negative_share", 0, 1)
        self.blur = _number(blur, "blur", 0, 1)
        self.blur_sigma = _range(blur_sigma, "blur_sigma", 0, self.search_size / 8)
        if not isinstance(blur_sequences, bool):
            raise ConfigError(f"train.plan.blur_sequences: must be true or false, not {blur_sequences!r}")
        self.blur_sequences = blur_sequences
        # the stored crop is large enough for the largest shift at the largest scale
        self.crop_size = self.search_size + 2 * math.ceil(self.shift + self.search_size * self.scale_jitter) + 2
        self.sequence_items = items
        self.stills: SequenceItems | None = None
        self.stills_path = None if stills is None else expand_data_path(str(stills))
        if self.stills_path is not None and self.stills_share > 0:
            self.stills = SequenceItems.from_sequences(read_coco_stills(self.stills_path))
        elif self.stills_share > 0:
            raise ConfigError("train.plan.stills_share: set train.plan.stills to a COCO folder as well")
        present = items.present
        self.frames = np.nonzero(present)[0]
        if len(self.frames) == 0:
            raise DataError("no training frame has its target")
        # per frame: the range of frames of its sequence within max_gap, among those with the target
        self.partners: list[np.ndarray] = []
        for idx in self.frames:
            same = np.nonzero((items.labels == items.labels[idx]) & present)[0]
            near = same[np.abs(items.frame[same] - items.frame[idx]) <= self.max_gap]
            others = near[near != idx]
            self.partners.append(others if len(others) else near)
        # negatives: a frame of any other sequence (frames are in sequence order), another still of the category
        frame_labels = items.labels[self.frames]
        self._own = np.stack([np.searchsorted(frame_labels, frame_labels, "left"),
                              np.searchsorted(frame_labels, frame_labels, "right")], axis=1)  # fmt: skip
        if self.negative_share > 0 and len(self._own) and (self._own[:, 1] - self._own[:, 0] == len(self.frames)).all():
            raise ConfigError("train.plan.negative_share: negative pairs need at least two training sequences "
                              "with the target (a search image centred on another sequence's target)")  # fmt: skip
        self._still_groups: list[np.ndarray] = []
        if self.stills is not None and self.negative_share > 0:
            self._still_groups = _category_groups([s.category for s in self.stills.sequences])
        per_epoch = config.samples_per_epoch if config.samples_per_epoch is not None else len(self.frames)
        self.per_epoch = int(per_epoch)
        self.batch_size = config.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.per_epoch // self.batch_size)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(super().fingerprint().encode())
        digest.update(repr((self.max_gap, self.stills_path, self.stills_share, self.crop_size,
                            len(self.stills) if self.stills is not None else 0)).encode())  # fmt: skip
        if self.negative_share > 0 or self.blur > 0:  # (absent when off: earlier runs resume as they were)
            digest.update(repr((self.negative_share, self.blur, self.blur_sigma, self.blur_sequences)).encode())
        return digest.hexdigest()[:16]

    def _crops(self, items: SequenceItems) -> torch.Tensor:
        return items.crops(self.crop_size, self.exemplar_size, self.context)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        rng = numpy_rng(self.seed, Stream.TRACKING_PAIRS, epoch)
        seq_crops = self._crops(self.sequence_items)
        still_crops = self._crops(self.stills) if self.stills is not None else None
        seq_sizes = self.sequence_items.target_sizes(self.exemplar_size, self.context)
        still_sizes = self.stills.target_sizes(self.exemplar_size, self.context) if self.stills is not None else None
        jobs = []
        for _ in range(self.steps_per_epoch):
            n = self.batch_size
            from_still = rng.random(n) < self.stills_share if still_crops is not None else np.zeros(n, bool)
            negative = rng.random(n) < self.negative_share if self.negative_share > 0 else np.zeros(n, bool)
            z_idx = np.empty(n, np.int64)
            x_idx = np.empty(n, np.int64)
            for k in range(n):
                if from_still[k]:
                    assert still_crops is not None
                    z_idx[k] = x_idx[k] = rng.integers(len(still_crops))
                    if negative[k]:
                        x_idx[k] = _other(rng, self._still_groups[z_idx[k]], z_idx[k])
                else:
                    f = rng.integers(len(self.frames))
                    z_idx[k] = self.frames[f]
                    if negative[k]:  # a frame of another sequence: skip this sequence's block of frames
                        start, end = self._own[f]
                        r = rng.integers(len(self.frames) - (end - start))
                        x_idx[k] = self.frames[r + (end - start) * (r >= start)]
                    else:
                        x_idx[k] = rng.choice(self.partners[f])
            draws = _Draws.sample(rng, n, self)
            draws.values["present"] = ~negative
            if self.blur > 0:
                blurred = (rng.random(n) < self.blur) & (from_still | self.blur_sequences)
                sigma = rng.uniform(*self.blur_sigma, n)
                draws.values["x_blur"] = np.where(blurred, sigma, 0.0)
            sizes = np.stack([still_sizes[i] if s and still_sizes is not None else seq_sizes[i]
                              for i, s in zip(x_idx, from_still)])  # fmt: skip
            draws.values["x_size"] = sizes
            # the loss's own draws (anchor sampling): a child of the stream, which it leaves as it was
            seed = int(rng.spawn(1)[0].integers(2**63 - 1))
            jobs.append(_pair_job(seq_crops, still_crops, z_idx, x_idx, from_still, draws, self, seed))
        return jobs


def _range(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"train.plan.{name}: must be a range [low, high], not {value!r}")
    lo, hi = (_number(v, name, low, high) for v in value)
    if lo > hi:
        raise ConfigError(f"train.plan.{name}: the low end {lo:g} is above the high end {hi:g}")
    return lo, hi


def _category_groups(categories: list[str]) -> list[np.ndarray]:
    """Per still, the stills a negative pair may take its search image from, itself among them
    (sorted): those of its category when it has another, else all of them."""
    everyone = np.arange(len(categories))
    if len(categories) < 2:
        raise ConfigError("train.plan.negative_share: negative still pairs need two boxes in train.plan.stills")
    by_category: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        if c:
            by_category.setdefault(c, []).append(i)
    groups = {c: np.asarray(members) for c, members in by_category.items() if len(members) > 1}
    return [groups.get(c, everyone) for c in categories]


def _other(rng: np.random.Generator, group: np.ndarray, own: int) -> int:
    """A member of ``group`` (sorted, ``own`` among them) other than ``own``, uniformly."""
    r = int(rng.integers(len(group) - 1))
    return int(group[r + int(r >= np.searchsorted(group, own))])


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of ``images (n, c, H, W)`` blurred by a Gaussian of its own ``sigma (n,)`` pixels
    (separable, truncated at 3σ, reflected at the borders); σ = 0 leaves an image as it was."""
    if not bool((sigma > 0).any()):
        return images
    n, c, h, w = images.shape
    radius = min(max(1, math.ceil(3 * float(sigma.max()))), min(h, w) - 1)
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    s = sigma.to(images.dtype).clamp_min(1e-3).view(-1, 1)  # σ → 0: a unit impulse
    kernel = torch.exp(-(taps**2) / (2 * s**2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n·c, 2r + 1)
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return x.view(n, c, h, w)


class _Draws:
    """The random numbers of one batch, drawn in the epoch loop (not on the prefetch thread)."""

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        self.values = values

    def __getitem__(self, key: str) -> torch.Tensor:
        return torch.from_numpy(self.values[key]).float()

    @classmethod
    def sample(cls, rng: np.random.Generator, n: int, plan: TrackingPairsPlan) -> _Draws:
        def u(*shape: int) -> np.ndarray:
            return np.asarray(rng.uniform(-1.0, 1.0, shape))

        return cls({
            "z_shift": u(n, 2) * plan.exemplar_shift, "x_shift": u(n, 2) * plan.shift,
            "z_scale": 1 + u(n) * plan.scale_jitter, "x_scale": 1 + u(n) * plan.scale_jitter,
            "flip": (rng.random(n) < plan.hflip).astype(np.float64),
            "z_colour": 1 + u(n, 3) * plan.colour, "x_colour": 1 + u(n, 3) * plan.colour,
            "z_gray": (rng.random(n) < plan.gray).astype(np.float64),
            "x_gray": (rng.random(n) < plan.gray).astype(np.float64),
        })  # fmt: skip


def sample_window(crops: torch.Tensor, center: torch.Tensor, side: torch.Tensor, out: int,
                  flip: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """From ``crops (n, 3, C, C)`` (float), the squares of ``side`` pixels centred ``center (n, 2)``
    pixels from each crop's centre, resampled to ``out`` (mirrored where ``flip``)."""
    c = crops.shape[-1]
    sign = 1 - 2 * flip
    theta = torch.zeros(len(crops), 2, 3)
    theta[:, 0, 0] = sign * side / c
    theta[:, 1, 1] = side / c
    theta[:, :, 2] = 2 * center / c
    grid = F.affine_grid(theta, [len(crops), 3, out, out], align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(images: torch.Tensor, factors: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation multiplied by ``factors (n, 3)``; grey where ``gray``."""
    b, c, s = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = images * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    lum = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    s = torch.where(gray.view(-1, 1, 1, 1) > 0, torch.zeros_like(s), s)
    x = (x - lum) * s + lum
    return x.clamp_(0.0, 1.0)


def _pair_job(seq_crops: torch.Tensor, still_crops: torch.Tensor | None, z_idx: np.ndarray, x_idx: np.ndarray,
              from_still: np.ndarray, draws: _Draws, plan: TrackingPairsPlan, seed: int = 0) -> BatchJob:  # fmt: skip
    def pick(idx: np.ndarray) -> torch.Tensor:
        rows = [still_crops[i] if s and still_crops is not None else seq_crops[i] for i, s in zip(idx, from_still)]
        return torch.stack(rows).float().div_(255.0)

    def job() -> TrackingPairBatch:
        flip = draws["flip"]
        z_scale, x_scale = draws["z_scale"], draws["x_scale"]
        # the window moves by -shift, so the target appears shifted by +shift/scale (mirrored: x negated)
        z_shift, x_shift = draws["z_shift"], draws["x_shift"]
        z = sample_window(pick(z_idx), -z_shift * z_scale[:, None], plan.exemplar_size * z_scale,
                          plan.exemplar_size, flip)  # fmt: skip
        x = sample_window(pick(x_idx), -x_shift * x_scale[:, None], plan.search_size * x_scale,
                          plan.search_size, flip)  # fmt: skip
        if "x_blur" in draws.values:
            x = gaussian_blur(x, draws["x_blur"])
        z = colour_jitter(z, draws["z_colour"], draws["z_gray"])
        x = colour_jitter(x, draws["x_colour"], draws["x_gray"])
        offsets = x_shift.clone()
        offsets[:, 0] = offsets[:, 0] * (1 - 2 * flip)
        # the window is x_scale times the search size: the target shrinks by that factor
        present = torch.from_numpy(draws.values["present"])
        return TrackingPairBatch(z, x, offsets, draws["x_size"] / x_scale[:, None], present, seed)

    return job
