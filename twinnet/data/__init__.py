"""Data: labelled items, pairs, triplets, P×K batches, splits, augmentation."""

from twinnet.data.digits import digits_items
from twinnet.data.images import load_image
from twinnet.data.items import ItemSet, from_arrays, image_folder, scan_image_folder
from twinnet.data.pairs import Pairs, PairSampler, PairsFile, balanced_pairs, read_pairs_file, sample_triplets
from twinnet.data.samplers import PKBatchSampler
from twinnet.data.splits import split_by_class, split_by_item
from twinnet.data.transforms import RandomAffine

__all__ = [
    "ItemSet",
    "PKBatchSampler",
    "PairSampler",
    "Pairs",
    "PairsFile",
    "RandomAffine",
    "balanced_pairs",
    "digits_items",
    "from_arrays",
    "image_folder",
    "load_image",
    "read_pairs_file",
    "sample_triplets",
    "scan_image_folder",
    "split_by_class",
    "split_by_item",
]
