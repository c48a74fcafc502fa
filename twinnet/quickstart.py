"""``twinnet quickstart``: the whole path on data that ships inside scikit-learn, in about a minute.

Digits 0–5 are the known classes: 70% of their images train, 15% validate (early stopping and
threshold calibration), 15% are held back for the "seen" report. Digits 6–9 are never seen in
training or validation; they measure verification and 4-way one-shot learning of new classes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch import nn

from twinnet.compare import EuclideanDistance
from twinnet.config import Config, parse_config
from twinnet.data.digits import digits_items
from twinnet.data.items import ItemSet
from twinnet.data.splits import split_by_item
from twinnet.model import TwinNetwork, build_model
from twinnet.protocols import evaluate_nway, evaluate_verification
from twinnet.runtime import seed_everything
from twinnet.train import Trainer, build_loss

SEEN_DIGITS = (0, 1, 2, 3, 4, 5)

QUICKSTART_CONFIG: dict[str, Any] = {
    "model": {
        "input": {"kind": "image", "channels": 1, "size": [8, 8]},
        # Two conv blocks keep the spatial detail of 8×8 digits that deeper pooling throws away.
        "encoder": {"name": "conv4", "params": {"hidden": 64, "blocks": 2, "embedding_dim": 128, "dropout": 0.1}},
        "comparator": {"name": "euclidean"},
        "normalize": True,
    },
    "data": {
        "augment": {"enabled": True, "rotation": 10, "shear": 0.1, "scale": [0.9, 1.1], "translate": 0.06},
    },
    "loss": {"name": "triplet", "params": {"margin": 0.3, "mining": "all", "reduction": "mean_nonzero"}},
    "train": {
        "seed": 0,
        "epochs": 20,
        "samples_per_epoch": 1536,
        "classes_per_batch": 6,
        "items_per_class": 8,
        # Six classes alone teach a six-way embedding that forgets what unseen digits need. Two
        # terms keep it general: the instance term (two augmented views of each image as positives)
        # and the input-similarity term (the embedding's cosine similarities stay close to those of
        # the centred pixels); without the latter the model lost to raw pixels on unseen digits.
        "class_weight": 1.0,
        "instance_weight": 1.0,
        "input_similarity_weight": 10.0,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "validation": {"protocol": "verification", "pairs": 2000},
        "early_stopping": {"patience": None},
    },
}


def quickstart_config(overrides: dict[str, Any] | None = None) -> Config:
    import copy

    data = copy.deepcopy(QUICKSTART_CONFIG)
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, "quickstart config")


def write_examples(items: ItemSet, root: Path) -> None:
    """Save items as PNGs in ``root/<class>/NNNN.png``, numbered within each class (for the CLI walk-through)."""
    counts: dict[int, int] = {}
    for i in range(len(items)):
        label = int(items.labels[i])
        folder = root / items.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(items.data[i, 0].numpy()).save(folder / f"{counts.get(label, 0):04d}.png")
        counts[label] = counts.get(label, 0) + 1


class _Pixels(nn.Module):
    centre: torch.Tensor

    def __init__(self, centre: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("centre", torch.zeros(()) if centre is None else centre.flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) - self.centre


def _pixel_figures(pixels: TwinNetwork, items: ItemSet, seed: int) -> dict[str, float]:
    verification, _, _ = evaluate_verification(pixels, items, n_pairs=4000, seed=seed)
    oneshot = evaluate_nway(pixels, items, ways=4, shots=1, episodes=1000, seed=seed)
    return {"roc_auc": verification.metrics["roc_auc"], "oneshot_4way_accuracy": oneshot.metrics["accuracy"]}


def raw_pixel_baseline(items: ItemSet, seed: int) -> dict[str, float]:
    """The same unseen-digit protocols with Euclidean distance on raw pixels, for reference."""
    return _pixel_figures(TwinNetwork(_Pixels(), EuclideanDistance()), items, seed)


def centred_pixel_baseline(items: ItemSet, train: ItemSet, seed: int) -> dict[str, float]:
    """The same protocols with the cosine distance of pixels centred on the training images' mean:
    a stronger reference than raw pixels, and the geometry the input-similarity term pulls toward."""
    centre = train.load(np.arange(len(train))).mean(0)
    return _pixel_figures(TwinNetwork(_Pixels(centre), EuclideanDistance(), normalize=True), items, seed)


def run_quickstart(
    out: str | Path = "runs/quickstart",
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train on digits 0–5, evaluate on held-back seen images and on unseen digits 6–9, save."""
    console = console or Console(stderr=True)
    out = Path(out)
    train_overrides: dict[str, Any] = {"seed": seed, "progress": progress}
    if epochs is not None:
        train_overrides["epochs"] = epochs
    config = quickstart_config({"train": train_overrides})
    started = time.perf_counter()
    items = digits_items()
    seen_mask = np.isin(items.labels, SEEN_DIGITS)
    seen, unseen = items.subset(np.nonzero(seen_mask)[0]), items.subset(np.nonzero(~seen_mask)[0])
    train_idx, rest = split_by_item(seen.labels, 0.3, seed)
    val_rel, test_rel = split_by_item(seen.labels[rest], 0.5, seed)
    train, val, test_seen = seen.subset(train_idx), seen.subset(rest[val_rel]), seen.subset(rest[test_rel])

    seed_everything(seed)  # before building, so initial weights are reproducible too
    model = build_model(config.model)
    trainer = Trainer(
        model, build_loss(config), train, config.train, val_items=val, augment=config.data.augment,
        run_dir=out, run_config=config, console=console,
    )  # fmt: skip
    result = trainer.fit()
    model = result.model

    seen_result, _, _ = evaluate_verification(model, test_seen, n_pairs=4000, seed=seed, calibration=model.calibration)
    unseen_result, _, _ = evaluate_verification(model, unseen, n_pairs=4000, seed=seed, calibration=model.calibration)
    oneshot = evaluate_nway(model, unseen, ways=4, shots=1, episodes=1000, queries_per_class=1, seed=seed)
    baseline = raw_pixel_baseline(unseen, seed)
    centred = centred_pixel_baseline(unseen, train, seed)
    write_examples(unseen, out / "examples" / "unseen")
    return {
        "seen": {
            "roc_auc": seen_result.metrics["roc_auc"],
            "eer": seen_result.metrics["eer"],
            "accuracy_at_calibrated_threshold": seen_result.details.get("calibrated", {}).get("accuracy"),
            "items": len(test_seen),
        },
        "unseen": {
            "roc_auc": unseen_result.metrics["roc_auc"],
            "eer": unseen_result.metrics["eer"],
            "oneshot_4way_accuracy": oneshot.metrics["accuracy"],
            "oneshot_4way_ci95": oneshot.metrics["ci95"],
            "items": len(unseen),
        },
        "unseen_raw_pixel_baseline": baseline,
        "unseen_centred_pixel_baseline": centred,
        "model": str(result.model_dir),
        "examples": str(out / "examples" / "unseen"),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": time.perf_counter() - started,
    }
