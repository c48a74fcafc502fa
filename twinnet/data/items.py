"""Labelled items: the common currency of samplers, training and evaluation.

An :class:`ItemSet` knows each item's class label and name and loads any subset of items as one
batch tensor. Items are addressed by index, so pairs and triplets are index arrays, never copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.faces import collect_misses, miss_report
from twinnet.data.images import is_image_file, load_image, to_float
from twinnet.errors import DataError

if TYPE_CHECKING:
    from twinnet.data.pairs import Pairs

log = logging.getLogger(__name__)


@dataclass
class ItemSet:
    """Items with integer ``labels`` (indices into ``class_names``) and optional ``groups``
    (e.g. the alphabet of an Omniglot character), loaded through ``load(indices)``.

    The base class holds every item in memory as one tensor (``uint8`` images or float vectors).
    """

    data: torch.Tensor
    labels: np.ndarray
    class_names: list[str]
    names: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    """Further per-item arrays, e.g. ``drawer`` for Omniglot; kept by ``subset``."""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.data) != len(self.labels):
            raise DataError(f"{len(self.data)} items but {len(self.labels)} labels")
        if not self.names:
            self.names = [f"item[{i}]" for i in range(len(self.labels))]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: np.ndarray | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The items at ``indices`` as a float32 batch (images scaled to [0, 1])."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return to_float(self.data.index_select(0, index))

    @property
    def texts(self) -> list[str] | None:
        """The items as texts, for a set of texts (encoders build vocabularies from them); else None."""
        return None

    def split_pairs(self, pairs: Pairs, share: float, seed: int) -> tuple[tuple[ItemSet, Pairs], tuple[ItemSet, Pairs]]:
        """Hold out ``share`` of ``pairs`` into these items (seeded): ``((items, kept), (items, held))``.
        Both keep this item set; the order is one seeded permutation, as it always was, so runs
        reproduce."""
        order = np.random.default_rng(seed).permutation(len(pairs))
        n_held = round(share * len(pairs))
        return (self, pairs[order[n_held:]]), (self, pairs[order[:n_held]])

    def subset(self, indices: np.ndarray | Sequence[int]) -> ItemSet:
        """The items at ``indices``, keeping class ids and names (classes may become empty)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ItemSet(
            data=self.data[torch.from_numpy(idx)],
            labels=self.labels[idx],
            class_names=self.class_names,
            names=[self.names[i] for i in idx],
            groups=None if self.groups is None else self.groups[idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
        )

    #: Whether ``load`` gives whole items as one batch a model embeds into vectors (False for the
    #: frames of tracking sequences, which train only through their plan's crops).
    loads_whole_items: ClassVar[bool] = True

    @property
    def labelled(self) -> np.ndarray:
        """Per item, whether its label is a real class (False for items read without labels, each
        of which is then its own class: an unlabelled folder, or the unlabelled part of mixed data)."""
        mask = self.attributes.get("labelled")
        return np.ones(len(self), bool) if mask is None else np.asarray(mask, bool)

    def class_sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def require_min_per_class(self, minimum: int = 2, what: str = "pairs") -> None:
        """Raise DataError naming every non-empty class with fewer than ``minimum`` items."""
        sizes = self.class_sizes()
        small = [self.class_names[c] for c in np.nonzero((sizes > 0) & (sizes < minimum))[0]]
        if small:
            shown = ", ".join(repr(s) for s in small[:10]) + (" …" if len(small) > 10 else "")
            raise DataError(f"{len(small)} class(es) have fewer than {minimum} items, too few to build {what}: {shown}")


def from_arrays(
    x: np.ndarray | torch.Tensor, y: np.ndarray | Sequence[int], class_names: Sequence[str] | None = None
) -> ItemSet:
    """Items from an array of inputs (``uint8`` images ``(N, C, H, W)`` or float vectors) and labels.

    Labels may be any hashable values; they are mapped to contiguous ids in sorted order.
    """
    data = torch.as_tensor(np.asarray(x))
    raw = np.asarray(y)
    if raw.ndim != 1 or len(raw) != len(data):
        raise DataError(f"labels must be one per item: got shape {raw.shape} for {len(data)} items")
    values, ids = np.unique(raw, return_inverse=True)
    names = list(class_names) if class_names is not None else [str(v) for v in values]
    if len(names) != len(values):
        raise DataError(f"{len(names)} class names for {len(values)} distinct labels")
    return ItemSet(data=data, labels=ids, class_names=names)


def scan_image_folder(root: str | Path, class_depth: int = 1) -> tuple[list[Path], np.ndarray, list[str], np.ndarray]:
    """Find images under ``root`` whose class is named by the first ``class_depth`` folder levels
    (``root/<class>/…`` for 1, ``root/<group>/<class>/…`` for 2; deeper files belong to the class
    folder above them). Returns paths, labels, class names (``a/b`` joined) and group ids."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    if class_depth < 1:
        raise DataError(f"class_depth must be at least 1, got {class_depth}")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    classes: dict[str, int] = {}
    group_ids: dict[str, int] = {}
    kept: list[Path] = []
    labels: list[int] = []
    groups: list[int] = []
    for p in paths:
        parts = p.relative_to(root).parts
        if len(parts) <= class_depth:
            continue  # an image above the class level belongs to no class
        name = "/".join(parts[:class_depth])
        labels.append(classes.setdefault(name, len(classes)))
        groups.append(group_ids.setdefault(parts[0], len(group_ids)))
        kept.append(p)
    if not kept:
        raise DataError(
            f"{root}: no images found in class sub-folders (expected {root}/<class>/<image> "
            f"with class_depth={class_depth})"
        )
    return kept, np.asarray(labels), list(classes), np.asarray(groups)


def load_images(paths: Sequence[Path], spec: InputSpec, skip_bad: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """Decode ``paths`` into one ``uint8`` tensor; returns it and the indices of the paths kept.
    With ``spec.face_crop``, images where no face was found are named in one warning."""
    tensors, kept = [], []
    with collect_misses() as misses:
        for i, p in enumerate(paths):
            try:
                tensors.append(load_image(p, spec))
                kept.append(i)
            except DataError as err:
                if not skip_bad:
                    raise DataError(f"{err} (set data.skip_bad_images: true, or --skip-bad, to leave it out)") from None
                log.warning("skipping %s", err)
    if misses:
        log.warning("%s", miss_report(misses, len(paths)))
    if not tensors:
        raise DataError("no readable images")
    return torch.stack(tensors), np.asarray(kept, dtype=np.int64)


def image_folder(root: str | Path, spec: InputSpec, class_depth: int = 1, skip_bad: bool = False) -> ItemSet:
    """Labelled images from a folder with one sub-folder per class, decoded into memory."""
    paths, labels, class_names, groups = scan_image_folder(root, class_depth)
    data, kept = load_images(paths, spec, skip_bad)
    return ItemSet(
        data=data,
        labels=labels[kept],
        class_names=class_names,
        names=[str(paths[i]) for i in kept],
        groups=groups[kept],
    )


def as_unlabelled(items: ItemSet) -> ItemSet:
    """``items`` with their labels dropped: every item becomes its own class (named after the
    item) and is marked unlabelled (:attr:`ItemSet.labelled`), so label-free losses, samplers and
    protocols all see what they expect: one instance per class."""
    n = len(items)
    attributes = {**items.attributes, "labelled": np.zeros(n, bool)}
    return replace(items, labels=np.arange(n, dtype=np.int64), class_names=list(items.names), groups=None,
                   attributes=attributes)  # fmt: skip


def join_items(labelled: ItemSet, unlabelled: ItemSet) -> ItemSet:
    """Mixed data: the labelled items, then the unlabelled ones (each its own class, after the
    labelled classes). Both must be the same kind of item (images of one size, or texts)."""
    if type(labelled) is not type(unlabelled):
        raise DataError(f"mixed data: the labelled part holds {type(labelled).__name__}, the unlabelled part "
                        f"{type(unlabelled).__name__}; give both as images, or both as texts")  # fmt: skip
    if isinstance(labelled.data, torch.Tensor):
        if labelled.data.shape[1:] != unlabelled.data.shape[1:]:
            raise DataError(f"mixed data: labelled items are {tuple(labelled.data.shape[1:])}, unlabelled ones "
                            f"{tuple(unlabelled.data.shape[1:])}")  # fmt: skip
        data: Any = torch.cat([labelled.data, unlabelled.data])
    else:
        data = list(labelled.data) + list(unlabelled.data)
    offset = len(labelled.class_names)
    mask = np.concatenate([labelled.labelled, np.zeros(len(unlabelled), bool)])
    shared = set(labelled.attributes) & set(unlabelled.attributes) - {"labelled"}
    attributes = {k: np.concatenate([labelled.attributes[k], unlabelled.attributes[k]]) for k in shared}
    attributes["labelled"] = mask
    return replace(
        labelled, data=data, labels=np.concatenate([labelled.labels, offset + np.arange(len(unlabelled))]),
        class_names=list(labelled.class_names) + list(unlabelled.names), names=labelled.names + unlabelled.names,
        groups=None, attributes=attributes,
    )  # fmt: skip
