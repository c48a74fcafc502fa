"""Training and validation data per ``config.data``: read through the data-source registry, then split.

- ``data.val_path`` given: that is the validation data (read in the same format);
- data with fixed pairs (a pairs file, text pairs): ``data.val_classes`` of the *pairs* are held out;
- labelled items: ``data.val_classes`` of the classes (``split: class``) or of the groups
  (``split: group``, e.g. Omniglot alphabets, signature writers) are held out, so validation measures
  identities never trained on; ``data.rotate_classes`` then adds rotated training classes.
- ``data.exclude_val_texts``: training texts that the validation data also holds are left out.

The validation :class:`~twinnet.data.sources.Dataset` keeps its source's ``calibration_protocols``
(e.g. ``signature``), which the trainer calibrates after training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from twinnet.config import Config, DataConfig
from twinnet.data.archives import with_rotated_classes
from twinnet.data.items import ItemSet, as_unlabelled, join_items
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset, ReadOptions, read_dataset
from twinnet.data.splits import split_by_class
from twinnet.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The training data and the held-out validation data (``None`` without validation)."""

    train: Dataset
    val: Dataset | None = None


def read_options(data: DataConfig) -> ReadOptions:
    return ReadOptions(class_depth=data.class_depth, skip_bad=data.skip_bad_images, score_max=data.score_max,
                       positive_score=data.positive_score)  # fmt: skip


def load_datasets(config: Config) -> TrainingData:
    """Read ``data.path`` (and ``data.val_path``) in ``data.format`` and split off validation data."""
    d = config.data
    if d.path is None:
        raise ConfigError("data.path: no training data given (use --data DIR)")
    options = read_options(d)
    seed = config.train.seed
    data = read_dataset(d.path, config.model.input, d.format, options)
    if not d.labels:
        data = replace(data, items=as_unlabelled(data.items), pairs=None, runs=None)
    if d.val_path:
        split = TrainingData(data, read_dataset(d.val_path, config.model.input, d.format, options))
    elif data.has_pairs:
        split = hold_out_pairs(data, d.val_classes, seed)
    elif not data.items.labelled.any():
        # items without labels have no classes to hold out: validation needs labelled data.val_path
        log.warning("%s has no labels: training without validation (give data.val_path, a labelled folder, to "
                    "validate and calibrate)", d.path)  # fmt: skip
        split = TrainingData(data)
    else:
        split = hold_out_classes(data, d.val_classes, d.split, seed)
    if d.unlabelled_path:
        if split.train.has_pairs:
            raise ConfigError("data.unlabelled_path: mixed data needs items (a folder of classes, or data.labels: "
                              "false), not a pairs file")  # fmt: skip
        extra = read_dataset(d.unlabelled_path, config.model.input, d.unlabelled_format, options,
                             field="data.unlabelled_format")  # fmt: skip
        split.train = replace(split.train, items=join_items(split.train.items, as_unlabelled(extra.items)))
    if d.exclude_val_texts:
        split.train = without_val_texts(split)
    if d.rotate_classes:
        if split.train.has_pairs:
            raise ConfigError("data.rotate_classes: rotated classes need labelled items (a folder of classes), "
                              "not a pairs file")  # fmt: skip
        split.train = replace(split.train, items=with_rotated_classes(split.train.items))
    return split


def without_val_texts(split: TrainingData) -> Dataset:
    """The training data less every text that also appears in the validation data
    (``data.exclude_val_texts``): adapting a model to the sentences it is then scored on would be
    transductive."""
    texts = split.train.items.texts
    if split.val is None or split.val.items.texts is None:
        raise ConfigError("data.exclude_val_texts: there is no validation text to exclude (give data.val_path, a "
                          "text pairs file)")  # fmt: skip
    if texts is None or split.train.has_pairs:
        raise ConfigError("data.exclude_val_texts: applies to training texts read without pairs (sentences, or a "
                          "pairs file with data.labels: false)")  # fmt: skip
    seen = set(split.val.items.texts)
    keep = np.array([i for i, text in enumerate(texts) if text not in seen], dtype=np.int64)
    if len(keep) < len(texts):
        log.warning("data.exclude_val_texts: left out %d of %d training texts that the validation data also holds",
                    len(texts) - len(keep), len(texts))  # fmt: skip
    return replace(split.train, items=split.train.items.subset(keep))


def hold_out_classes(data: Dataset, share: float, by: str, seed: int) -> TrainingData:
    """Hold out ``share`` of the classes (``by="class"``) or of the groups (``by="group"``)."""
    if share == 0:
        return TrainingData(data)
    items = data.items
    if by == "group":
        if items.groups is None:
            raise ConfigError("data.split: 'group' needs class_depth >= 2 (groups are the first folder level)")
        keep, held = split_by_class(items.groups, share, seed)
    else:
        keep, held = split_by_class(items.labels, share, seed)
    return TrainingData(replace(data, items=items.subset(keep)), replace(data, items=items.subset(held)))


def hold_out_pairs(data: Dataset, share: float, seed: int) -> TrainingData:
    """Hold out ``share`` of the pairs (seeded); nothing is held out when ``share`` is 0.

    Texts are stored once per distinct text, so each side keeps only the texts its pairs use (a
    ``small_text`` vocabulary is built from the training texts alone); the images of an image pairs
    file stay one item set shared by both sides. Each keeps the split it always had, so runs
    reproduce (:meth:`ItemSet.split_pairs`: texts as :meth:`TextPairs.split`, stream
    ``Stream.TEXT_SPLIT``; image pairs in the order of one seeded permutation).
    """
    if share == 0:
        return TrainingData(data)
    pairs = data.pairs
    assert pairs is not None  # callers split pair data only
    (kept_items, kept), (held_items, held) = data.items.split_pairs(pairs, share, seed)
    if len(held) == 0:
        return TrainingData(data)
    return TrainingData(replace(data, items=kept_items, pairs=kept), replace(data, items=held_items, pairs=held))


def vocabulary_texts(data: Dataset) -> list[str] | None:
    """The training texts, for encoders that build a vocabulary from them (``None`` for tensors)."""
    return data.items.texts


def load_training_data(config: Config) -> tuple[ItemSet, ItemSet | None, Pairs | None, Pairs | None]:
    """``(train_items, val_items, train_pairs, val_pairs)`` per ``config.data`` (see :func:`load_datasets`)."""
    split = load_datasets(config)
    val = split.val
    return split.train.items, None if val is None else val.items, split.train.pairs, None if val is None else val.pairs
