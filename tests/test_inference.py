"""twinnet.inference and the image reader: no input, weight or threshold gives a silent wrong answer."""

import numpy as np
import pytest
import torch
from PIL import Image

import twinnet
from twinnet.calibrate import Calibration, OperatingPoint
from twinnet.config import InputSpec, ModelConfig
from twinnet.data import images
from twinnet.data.images import decode_image, load_image
from twinnet.errors import ConfigError, DataError, ModelFormatError
from twinnet.inference import decide, embed, embed_files, verify

MLP = {"name": "mlp", "params": {"hidden": [8], "embedding_dim": 3}}
VECTOR = {"input": {"kind": "vector", "features": 6}, "encoder": MLP}
IMAGE = {"input": {"size": [8, 8]}, "encoder": MLP}


def png_header(width, height):
    """A PNG file of a few bytes whose header declares ``width`` × ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def model(config=VECTOR, nan=False):
    net = twinnet.build_model(ModelConfig.model_validate(config)).eval()
    if nan:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float("nan"))
    return net


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), "nan", [0.5]])
def test_decide_refuses_a_threshold_that_is_not_a_finite_number(threshold):
    # before: nan decided "different" for every pair, inf "same"
    with pytest.raises(ConfigError, match="threshold: .* is not a finite number"):
        decide(model(), 0.3, threshold)


def test_decide_with_finite_thresholds():
    net = model()
    assert decide(net, 0.3, 0.5).same is True and decide(net, 0.3, 0.2).same is False
    assert decide(net, 0.3).same is None  # no calibration, no threshold: undecided
    assert decide(net, np.float32(0.3), np.float64(0.5)).threshold == 0.5


def test_decide_refuses_a_non_finite_value_and_a_corrupt_calibrated_threshold():
    net = model()
    with pytest.raises(DataError, match=r"non-finite distance \(nan\)"):
        decide(net, float("nan"), 0.5)
    tampered = OperatingPoint(threshold=float("nan"), target="eer", far=0.1, frr=0.1, accuracy=0.9)
    net.calibration = Calibration(net.comparator.orientation, {"default": tampered})  # a tampered calibration.json
    with pytest.raises(ModelFormatError, match="calibrated threshold is nan"):
        decide(net, 0.3)
    assert decide(net, 0.3, 0.5).same is True  # an explicit threshold does not need the calibration


def test_verify_with_nan_weights_names_the_input_instead_of_answering_different():
    with pytest.raises(DataError, match="non-finite embeddings for A: its weights may be corrupt"):
        verify(model(nan=True), torch.zeros(6), torch.ones(6), 0.5)
    with pytest.raises(ConfigError, match="threshold: nan"):
        verify(model(), torch.zeros(6), torch.ones(6), float("nan"))


def test_embed_checks_embeddings_and_batch_size():
    with pytest.raises(DataError, match="non-finite embeddings for input 1, input 2, input 3 and 1 more"):
        embed(model(nan=True), torch.zeros(4, 6))
    with pytest.raises(DataError, match="non-finite embeddings for x, y"):
        embed(model(nan=True), [np.zeros(6), np.ones(6)], names=["x", "y"])
    with pytest.raises(ConfigError, match="batch_size: must be a whole number of at least 1, not 0"):
        embed(model(), torch.zeros(4, 6), batch_size=0)
    assert embed(model(), torch.zeros(4, 6), batch_size=3).shape == (4, 3)


def test_embed_files_writes_nothing_for_nan_weights_or_a_zero_batch(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    good, bad = twinnet.save(model(IMAGE), tmp_path / "good"), twinnet.save(model(IMAGE, nan=True), tmp_path / "bad")
    out = tmp_path / "e.npy"
    with pytest.raises(DataError, match=rf"non-finite embeddings for {folder / '0.png'}"):
        embed_files(bad, [folder], out)
    with pytest.raises(ConfigError, match="--batch-size: must be a whole number of at least 1, not 0"):
        embed_files(good, [folder], out, batch_size=0)
    assert not out.exists()
    assert embed_files(good, [folder], out, batch_size=2) == (3, 3)


def test_evaluate_refuses_nan_weights_naming_the_tensor(tmp_path, image_folder_factory):
    from twinnet.evaluate import evaluate_model

    data = image_folder_factory(classes=3, per_class=3, size=8)
    with pytest.raises(ModelFormatError, match=r"weights are corrupt: encoder\.net\.0\.weight holds NaN"):
        evaluate_model(model(IMAGE, nan=True), data, "nway", {"ways": 3, "episodes": 5})


# -- the pixel limit of the image reader --------------------------------------------------------------------


SPEC = InputSpec(channels=1, size=(8, 8))


@pytest.fixture
def bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(20000, 20000))  # a few bytes; 400 MB as uint8 pixels, 1.6 GB as float
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_load_image_refuses_an_image_over_40_megapixels_from_its_header(bomb, monkeypatch):
    monkeypatch.delenv("TWINNET_MAX_PIXELS", raising=False)
    with pytest.raises(DataError, match=rf"{bomb}: 20000×20000 pixels \(400.0 megapixels\) is over the limit of 40"):
        load_image(bomb, SPEC)
    with Image.open(bomb) as image, pytest.raises(DataError, match="upload.png: 20000×20000 pixels"):
        decode_image(image, SPEC, "upload.png")


def test_the_pixel_limit_is_set_by_environment_or_module_setting(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("L", (10, 10)).save(path)
    monkeypatch.setenv("TWINNET_MAX_PIXELS", "99")
    with pytest.raises(DataError, match=r"a.png: 10×10 pixels .* limit of 9.9e-05 megapixels \(set \$TWINNET_MAX"):
        load_image(path, SPEC)
    monkeypatch.setenv("TWINNET_MAX_PIXELS", "100")
    assert load_image(path, SPEC).shape == (1, 8, 8)
    monkeypatch.setattr(images, "MAX_PIXELS", 50)  # the process's own setting (the service's) comes first
    with pytest.raises(DataError, match="over the limit"):
        load_image(path, SPEC)
    monkeypatch.setattr(images, "MAX_PIXELS", None)
    for raw in ("lots", "0", "-5"):
        monkeypatch.setenv("TWINNET_MAX_PIXELS", raw)
        with pytest.raises(ConfigError, match=rf"\$TWINNET_MAX_PIXELS: '{raw}' is not a positive whole number"):
            load_image(path, SPEC)
