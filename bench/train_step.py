"""How much of a training step is the model, and how much waiting for data?

For ``conv4`` at 28 and 105 px with the default data path (images decoded once into memory,
batches indexed and augmented with Koch's affine distortions on a background thread), it runs
the Trainer for a fixed number of steps and reads its ``model_share`` (forward + backward +
optimiser time over step time) and images/s. As a reference in the same run it times bare
model steps on one fixed, pre-built batch: no data work at all. ``ratio_vs_bare_model`` is the
trainer's images/s over that reference.

    python bench/train_step.py [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet import ContrastiveLoss, Trainer, build_model
from twinnet.config import AugmentConfig, ModelConfig, TrainConfig
from twinnet.data import ItemSet


def synthetic_items(size: int, classes: int = 50, per_class: int = 20) -> ItemSet:
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.integers(0, 256, (classes * per_class, 1, size, size), dtype=np.uint8))
    return ItemSet(data, np.arange(classes).repeat(per_class), [str(c) for c in range(classes)])


def model_for(size: int):
    torch.manual_seed(0)
    return build_model(ModelConfig.model_validate({"input": {"size": [size, size]}, "encoder": {"name": "conv4"}}))


def bare_model_rate(size: int, pairs: int, steps: int) -> float:
    model, loss = model_for(size), ContrastiveLoss()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(2 * pairs, 1, size, size)
    same = torch.rand(pairs) < 0.5
    model.train()
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        z1, z2 = model.embed(x).chunk(2)
        value = loss(model.comparator(z1, z2), same)
        opt.zero_grad()
        value.backward()
        opt.step()
    return steps * 2 * pairs / (time.perf_counter() - start)


def trainer_rate(size: int, pairs: int, steps: int) -> dict[str, float]:
    cfg = TrainConfig(
        epochs=1, samples_per_epoch=steps * pairs, batch_size=pairs, progress=False, schedule="constant",
    )  # fmt: skip
    augment = AugmentConfig(enabled=True, rotation=10, shear=0.3, scale=(0.8, 1.2), translate=0.02)
    trainer = Trainer(model_for(size), ContrastiveLoss(), synthetic_items(size), cfg, augment=augment)
    record = trainer.fit().history[0]
    return {"images_per_s": record["items_per_s"], "model_share": record["model_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=64, help="pairs per step (2× images)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = {}
    for size in (28, 105):
        bare = bare_model_rate(size, args.pairs, args.steps)
        trained = trainer_rate(size, args.pairs, args.steps)
        rows[f"conv4_{size}px"] = {
            "images_per_s": round(trained["images_per_s"], 1),
            "model_share": round(trained["model_share"], 4),
            "bare_model_images_per_s": round(bare, 1),
            "ratio_vs_bare_model": round(trained["images_per_s"] / bare, 3),
        }
    table = Table(title=f"training step, conv4, {args.pairs} pairs/step, {args.steps} steps")
    for col in ("", "images/s", "model share", "bare model images/s", "ratio"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, f"{r['images_per_s']:.0f}", f"{r['model_share']:.3f}",
                      f"{r['bare_model_images_per_s']:.0f}", f"{r['ratio_vs_bare_model']:.2f}")  # fmt: skip
    Console().print(table)
    path = write_result(
        "train_step",
        {"pairs_per_step": args.pairs, "steps": args.steps, **rows,
         "model_share": min(r["model_share"] for r in rows.values())},
        started,
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
