"""twinnet.data.images: reading one image as the model expects it."""

from PIL import Image

from twinnet.config import InputSpec
from twinnet.data.images import load_image


def test_load_image_grayscale_rgb_and_invert(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (5, 3), color=(255, 255, 255)).save(p)
    gray = load_image(p, InputSpec(channels=1, size=(3, 5)))
    assert gray.shape == (1, 3, 5) and gray.max() == 255
    inverted = load_image(p, InputSpec(channels=1, size=(3, 5), invert=True))
    assert inverted.max() == 0
    assert load_image(p, InputSpec(channels=3, size=(6, 6))).shape == (3, 6, 6)
