import numpy as np
import pytest
import torch
from PIL import Image

from twinnet.config import AugmentConfig, InputSpec
from twinnet.data import (
    PairSampler,
    PKBatchSampler,
    RandomAffine,
    balanced_pairs,
    from_arrays,
    image_folder,
    read_pairs_file,
    sample_triplets,
    split_by_class,
    split_by_item,
)
from twinnet.data.images import load_image
from twinnet.errors import DataError

LABELS = np.repeat(np.arange(7), [2, 3, 5, 8, 13, 4, 2])


def test_balanced_pairs_are_half_same_and_valid():
    pairs = balanced_pairs(LABELS, 1001, seed=3)
    assert len(pairs) == 1001 and pairs.same.sum() == 500
    assert np.array_equal(LABELS[pairs.a] == LABELS[pairs.b], pairs.same)
    assert not (pairs.a == pairs.b).any()  # never an item with itself


def test_balanced_pairs_are_reproducible_per_seed_and_epoch():
    a = PairSampler(LABELS, 200, 64, seed=5).epoch(0)
    b = PairSampler(LABELS, 200, 64, seed=5).epoch(0)
    c = PairSampler(LABELS, 200, 64, seed=5).epoch(1)
    d = PairSampler(LABELS, 200, 64, seed=6).epoch(0)
    cat = lambda bs: np.concatenate([x.a for x in bs] + [x.b for x in bs])  # noqa: E731
    assert np.array_equal(cat(a), cat(b))
    assert not np.array_equal(cat(a), cat(c)) and not np.array_equal(cat(a), cat(d))
    assert [len(x) for x in a] == [64, 64, 64, 8]  # an epoch is exactly 200 pairs


def test_different_class_partners_are_uniform_over_other_items():
    pairs = balanced_pairs(LABELS, 40000, seed=0)
    diff = pairs[~pairs.same]
    sizes = np.bincount(LABELS)
    # P(partner in class 4 | anchor class c) = 13 / (37 - size_c) for c != 4
    expected = np.where(LABELS[diff.a] == 4, 0.0, 13 / (len(LABELS) - sizes[LABELS[diff.a]])).mean()
    assert (LABELS[diff.b] == 4).mean() == pytest.approx(expected, abs=0.01)


def test_triplets_are_valid():
    a, p, n = sample_triplets(LABELS, 500, seed=1)
    assert (LABELS[a] == LABELS[p]).all() and (a != p).all() and (LABELS[a] != LABELS[n]).all()


def test_pk_sampler_gives_p_classes_of_k():
    sampler = PKBatchSampler(LABELS, classes_per_batch=4, items_per_class=3, batches_per_epoch=10, seed=0)
    for batch in sampler.epoch(0):
        classes, counts = np.unique(LABELS[batch], return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()
    assert all(np.array_equal(x, y) for x, y in zip(sampler.epoch(2), sampler.epoch(2)))


def test_split_by_class_never_shares_a_class():
    keep, held = split_by_class(LABELS, 0.3, seed=0)
    assert set(LABELS[keep]).isdisjoint(LABELS[held])
    assert len(keep) + len(held) == len(LABELS)
    assert len(set(LABELS[held])) == 2  # 30% of 7 classes


def test_split_by_item_is_stratified():
    labels = np.repeat(np.arange(3), 10)
    keep, held = split_by_item(labels, 0.2, seed=0)
    assert np.array_equal(np.bincount(labels[held]), [2, 2, 2])
    assert set(keep).isdisjoint(held)


def test_image_folder_reads_classes(image_folder_factory):
    root = image_folder_factory(classes=3, per_class=4, size=12)
    items = image_folder(root, InputSpec(channels=1, size=(10, 10)))
    assert len(items) == 12 and items.class_names == ["class_0", "class_1", "class_2"]
    assert items.data.dtype == torch.uint8 and items.data.shape == (12, 1, 10, 10)
    batch = items.load([0, 5])
    assert batch.dtype == torch.float32 and batch.max() <= 1.0
    rgb = image_folder(root, InputSpec(channels=3, size=(12, 12)))
    assert rgb.data.shape == (12, 3, 12, 12)


def test_image_folder_class_depth_two(tmp_path):
    for alphabet in ("greek", "latin"):
        for ch in ("a", "b"):
            d = tmp_path / alphabet / ch
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("L", (8, 8), color=i * 50).save(d / f"{i}.png")
    items = image_folder(tmp_path, InputSpec(size=(8, 8)), class_depth=2)
    assert items.class_names == ["greek/a", "greek/b", "latin/a", "latin/b"]
    assert items.groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="data folder not found: .*nope"):
        image_folder(tmp_path / "nope", InputSpec())


def test_folder_without_class_subfolders(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="no images found in class sub-folders"):
        image_folder(tmp_path, InputSpec())


def test_truncated_image_is_named_and_can_be_skipped(image_folder_factory):
    root = image_folder_factory(classes=2, per_class=3)
    bad = root / "class_1" / "img_2.png"
    bad.write_bytes(bad.read_bytes()[:60])
    (root / "class_0" / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"img_2\.png: unreadable or truncated|notes\.png: not an image"):
        image_folder(root, InputSpec(size=(16, 16)))
    items = image_folder(root, InputSpec(size=(16, 16)), skip_bad=True)
    from pathlib import Path

    kept = {f"{Path(n).parent.name}/{Path(n).name}" for n in items.names}
    assert len(items) == 5 and "class_1/img_2.png" not in kept and "class_0/notes.png" not in kept


def test_class_with_one_item_is_named():
    items = from_arrays(np.zeros((5, 3), np.float32), ["a", "a", "b", "b", "lonely"])
    with pytest.raises(DataError, match="'lonely'"):
        items.require_min_per_class(2)


def test_pairs_file_reading_and_errors(tmp_path):
    good = tmp_path / "pairs.csv"
    good.write_text("a,b,label\nx/1.png,x/2.png,1\nx/1.png,y/1.png,0\n\n")
    pf = read_pairs_file(good)
    assert [p.name for p in pf.paths] == ["1.png", "2.png", "1.png"]
    assert pf.pairs.same.tolist() == [True, False] and pf.pairs.a.tolist() == [0, 0]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("p\tq\tsame\n")
    assert read_pairs_file(tsv).pairs.same.tolist() == [True]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the pairs file is empty"):
        read_pairs_file(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,label\n")
    with pytest.raises(DataError, match="no pairs"):
        read_pairs_file(header_only)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nc,d,maybe\n")
    with pytest.raises(DataError, match=r"bad.csv:2: label 'maybe'"):
        read_pairs_file(bad)
    short = tmp_path / "short.csv"
    short.write_text("a,b,1\nc,d\n")
    with pytest.raises(DataError, match=r"short.csv:2: expected 3 fields"):
        read_pairs_file(short)


def test_augmentation_is_seeded_batched_and_off_when_disabled():
    x = torch.rand(6, 1, 20, 20)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=10, shear=0.3, scale=(0.8, 1.2), translate=0.1))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)
    off = RandomAffine(AugmentConfig(enabled=False))
    assert off(x, torch.Generator()) is x


def test_identity_affine_leaves_images_unchanged():
    x = torch.rand(3, 1, 9, 9)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=0, shear=0, scale=(1, 1), translate=0))
    torch.testing.assert_close(aug(x, torch.Generator()), x, atol=1e-5, rtol=0)


def test_flip_is_exact():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=0, shear=0, scale=(1, 1), translate=0, hflip=True))
    outs = {tuple(aug(x, torch.Generator().manual_seed(s)).flatten().round().tolist()) for s in range(10)}
    assert outs == {tuple(x.flatten().tolist()), tuple(x.flip(3).flatten().tolist())}


def test_load_image_grayscale_rgb_and_invert(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (5, 3), color=(255, 255, 255)).save(p)
    gray = load_image(p, InputSpec(channels=1, size=(3, 5)))
    assert gray.shape == (1, 3, 5) and gray.max() == 255
    inverted = load_image(p, InputSpec(channels=1, size=(3, 5), invert=True))
    assert inverted.max() == 0
    assert load_image(p, InputSpec(channels=3, size=(6, 6))).shape == (3, 6, 6)
