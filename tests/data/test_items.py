"""twinnet.data.items: image folders and their errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from twinnet.config import InputSpec
from twinnet.data import (
    from_arrays,
    image_folder,
)
from twinnet.errors import DataError


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
