"""Real identity-shaped embeddings for the gallery and hashing benchmarks.

A small Omniglot model (``configs/omniglot.yaml`` with 128-d embeddings and a 7-minute budget) is
trained once into ``runs/bench-omniglot128`` (or taken from ``--model``); its embeddings of
``images_background`` (the training alphabets, each character a separate identity) and of
``images_evaluation`` (20 alphabets never trained on: unseen identities) are cached in
``runs/bench-omniglot128/embeddings.npz``. The synthetic generator
(:class:`twinnet.gallery.synthetic.IdentityGenerator`) is fitted on them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "runs" / "bench-omniglot128"
OVERRIDES = ["model.encoder.params.embedding_dim=128", "train.max_minutes=7", "train.epochs=12"]


def data_dir() -> Path:
    base = Path(os.environ.get("TWINNET_DATA", ROOT.parent / "shared" / "data"))
    return base / "omniglot"


def trained_model(run: Path = DEFAULT_MODEL) -> Any:
    """The Omniglot model of ``run`` (trained there first when missing: about 7 minutes)."""
    from twinnet.config import load_config
    from twinnet.io import load
    from twinnet.train import train_from_config

    if not (run / "model" / "twinnet.json").exists() and not (run / "twinnet.json").exists():
        print(f"training the benchmark's Omniglot model into {run} (7 minutes)", flush=True)
        cfg = load_config(ROOT / "configs" / "omniglot.yaml",
                          [f"data.path={data_dir() / 'images_background.zip'}", *OVERRIDES])  # fmt: skip
        train_from_config(cfg, run)
    return load(run)


def real_embeddings(run: Path = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """``train_x``/``train_y`` (background characters) and ``test_x``/``test_y`` (evaluation
    characters, never trained on), float32 and int64, cached next to the model."""
    cache = run / "embeddings.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    from twinnet.data.archives import read_items
    from twinnet.embedding import embed_batches

    model = trained_model(run)
    out: dict[str, np.ndarray] = {}
    for part, name in (("train", "images_background.zip"), ("test", "images_evaluation.zip")):
        items = read_items(data_dir() / name, model.config.input, class_depth=2)
        out[f"{part}_x"] = embed_batches(model, items).numpy().astype(np.float32)
        out[f"{part}_y"] = np.asarray(items.labels, dtype=np.int64)
    tmp = cache.with_name(".embeddings.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out
