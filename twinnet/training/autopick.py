"""``model.encoder.name: auto``: input size, channels and encoder picked from an image folder.

The default config for a user's own image folder (``configs/image-folder.yaml``) says ``auto``;
training then looks at a sample of the images and picks, saying what it picked:

- **channels**: 3 if any sampled image has colour, else 1;
- **size**: the median shorter side of the images, rounded down to a multiple of 8, between 32 px
  and 64 px (96 px from 2,000 images on: more data pays for larger inputs);
- **encoder**: ``conv4`` (4 conv blocks, a 128-d embedding) up to 64 px, else ``face_resnet``.

The run's saved config holds what was picked, so the model rebuilds without looking again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from twinnet.config import ComponentConfig, Config
from twinnet.data.items import scan_image_folder
from twinnet.errors import ConfigError, DataError

AUTO = "auto"
SAMPLE = 200


def pick_input(config: Config) -> tuple[Config, str | None]:
    """``config`` with an ``auto`` encoder (and the input's size and channels) resolved from the
    training images, and one line saying what was picked; unchanged (and ``None``) otherwise."""
    if config.model.encoder.name != AUTO:
        return config, None
    if config.model.input.kind != "image":
        raise ConfigError("model.encoder.name: 'auto' picks an encoder for image folders; name one for "
                          f"{config.model.input.kind} inputs")  # fmt: skip
    path = Path(config.data.path or "")
    if not path.is_dir():
        raise ConfigError(f"model.encoder.name: 'auto' looks at an image folder; {path} is not one (name an encoder)")
    paths, _, _, _ = scan_image_folder(path, config.data.class_depth or 1)
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), min(SAMPLE, len(paths)), replace=False))]
    sides, colour = [], False
    for p in sample:
        try:
            with Image.open(p) as image:
                sides.append(min(image.size))
                colour = colour or _has_colour(image)
        except (OSError, ValueError) as err:
            raise DataError(f"{p}: unreadable image ({err})") from None
    median = int(np.median(sides))
    cap = 96 if len(paths) >= 2000 else 64
    side = max(32, min(cap, median // 8 * 8))
    channels = 3 if colour else 1
    if side <= 64:
        encoder = ComponentConfig(name="conv4", params={"hidden": 64, "blocks": 4, "embedding_dim": 128})
    else:
        encoder = ComponentConfig(name="face_resnet", params={"widths": [16, 32, 64, 128], "blocks": [1, 2, 2, 1],
                                                              "embedding_dim": 128})  # fmt: skip
    model = config.model.model_copy(update={
        "input": config.model.input.model_copy(update={"size": (side, side), "channels": channels}),
        "encoder": encoder,
    })  # fmt: skip
    picked = config.model_copy(update={"model": model})
    message = (f"picked from {len(paths)} images (median shorter side {median} px, {'colour' if colour else 'grey'}): "
               f"input {side}×{side} {'RGB' if colour else 'grey'}, encoder {encoder.name} "
               f"{encoder.params} (set model.encoder and model.input to choose your own)")  # fmt: skip
    return picked, message


def _has_colour(image: Image.Image) -> bool:
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    rgb = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() > 8 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 8)
