"""The fingerprint data source: FVC names and folder layouts, databases, manifests, resolution."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twinnet.config import InputSpec
from twinnet.data.fingerprints import FingerprintSource, parse_name, read_fingerprints, scan
from twinnet.data.sources import read_dataset
from twinnet.errors import DataError
from twinnet.fingerprints.synthetic import ridge_image, write_fvc_folder

PLAIN = InputSpec(kind="image", channels=1, size=(64, 64))


def spec(dpi: float = 250, source_dpi: float = 500) -> InputSpec:
    return InputSpec.model_validate({"kind": "image", "channels": 1, "size": [96, 96], "preprocess": [
        {"name": "fingerprint", "params": {"dpi": dpi, "source_dpi": source_dpi}}]})  # fmt: skip


def test_fvc_file_names(tmp_path):
    root = tmp_path / "DB1_B"
    write_fvc_folder(root, fingers=2, impressions=3, ext=".tif")
    Image.fromarray(ridge_image(9, 1)[0]).save(root / "103_1.bmp")
    Image.fromarray(ridge_image(9, 2)[0]).save(root / "103_2.png")
    (root / "notes.txt").write_text("not an image")
    assert parse_name(root / "101_3.tif", root) == ("101", 3)
    items = read_fingerprints(root, PLAIN)
    assert items.class_names == ["101", "102", "103"]
    assert items.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert items.attributes["impression"].tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert set(items.attributes["database"].tolist()) == {"DB1_B"}
    assert items.data.shape == (8, 1, 64, 64)
    assert FingerprintSource().sniff(root, PLAIN)
    assert read_dataset(root, PLAIN).format == "fingerprints"  # recognised by format: auto


def test_folders_per_database_and_finger_with_a_manifest(tmp_path):
    root = tmp_path / "fingers"
    rows = ["split,set,finger_id,subject_id,impression,path,dpi"]
    for db, dpi in (("sensor_a", 500), ("sensor_b", 1000)):
        for f in range(2):
            folder = root / db / f"{db}_f{f}"
            folder.mkdir(parents=True)
            for i in (1, 3):
                Image.fromarray(ridge_image(f, i)[0]).save(folder / f"{i}.png")
                rows.append(f"dev,{db},{db}_f{f},{'p1' if db == 'sensor_a' else 'unknown'},{i},"
                            f"{db}/{db}_f{f}/{i}.png,{dpi}")  # fmt: skip
    (root / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    found = scan(root)
    assert [i.finger for i in found][:2] == ["sensor_a/sensor_a_f0"] * 2
    assert {i.database for i in found} == {"sensor_a", "sensor_b"}
    assert {i.dpi for i in found} == {500.0, 1000.0}
    items = read_fingerprints(root, PLAIN)
    assert len(np.unique(items.labels)) == 4 and items.attributes["impression"].tolist()[:2] == [1, 3]
    # groups: the person where the manifest names one, else the whole database
    groups = dict(zip(items.attributes["database"].tolist(), items.groups.tolist()))
    assert len(set(items.groups[items.attributes["database"] == "sensor_a"])) == 1
    assert groups["sensor_a"] != groups["sensor_b"]
    np.testing.assert_array_equal(items.attributes["dpi"], [500.0] * 4 + [1000.0] * 4)


def test_a_bad_manifest_dpi_names_the_line(tmp_path):
    root = tmp_path / "fingers"
    (root / "f1").mkdir(parents=True)
    Image.fromarray(ridge_image(0, 1)[0]).save(root / "f1" / "1.png")
    (root / "MANIFEST.csv").write_text("path,dpi\nf1/1.png,lots\n")
    with pytest.raises(DataError, match=r"MANIFEST.csv: line 2: dpi 'lots'"):
        scan(root)


def test_empty_or_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        scan(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no fingerprint images"):
        scan(tmp_path / "empty")


def test_resolution_from_the_file_then_the_manifest_then_the_config(tmp_path):
    # the same finger written at 500 dpi and upsampled ×2 to a 1000-dpi file: after resampling to
    # the model's 250 dpi both give nearly the same image
    grey = ridge_image(0, 1)[0]
    a = tmp_path / "a" / "DB"
    b = tmp_path / "b" / "DB"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    Image.fromarray(grey).save(a / "101_1.tif", dpi=(500, 500))
    big = Image.fromarray(grey).resize((grey.shape[1] * 2, grey.shape[0] * 2), Image.Resampling.BILINEAR)
    big.save(b / "101_1.tif", dpi=(1000, 1000))
    at_500 = read_fingerprints(a, spec()).data.float()
    at_1000 = read_fingerprints(b, spec()).data.float()
    assert (at_500 - at_1000).abs().mean() < 12  # same scale: only resampling noise
    # without the file's dpi, the config's source_dpi (500) is wrong for the big file: another scale
    big.save(b / "101_1.tif")
    wrong = read_fingerprints(b, spec()).data.float()
    assert (at_500 - wrong).abs().mean() > 2 * (at_500 - at_1000).abs().mean()
    # ... and the manifest's dpi fixes it
    (b / "MANIFEST.csv").write_text("path,dpi\n101_1.tif,1000\n")
    fixed = read_fingerprints(b, spec()).data.float()
    assert (at_500 - fixed).abs().mean() < 12


def test_a_sigcomp_signature_folder_is_not_taken_for_fingerprints(tmp_path):
    """SigComp's file names (001_01.PNG) match FVC's pattern; the ``_forg`` folders decide."""
    from twinnet.data.sources import DATA_SOURCES, read_dataset

    for folder in ("001", "001_forg", "002", "002_forg"):
        (tmp_path / folder).mkdir()
        for i in range(1, 3):
            Image.fromarray(np.full((20, 40), 200, np.uint8)).save(tmp_path / folder / f"{folder[:3]}_0{i}.PNG")
    assert FingerprintSource().sniff(tmp_path, InputSpec(size=(16, 32)))  # the names alone would claim it
    data = read_dataset(tmp_path, InputSpec(size=(16, 32)))
    assert "writer" in data.items.attributes and "genuine" in data.items.attributes
    assert "offline_signatures" in DATA_SOURCES
