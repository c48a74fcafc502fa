"""Omniglot one-shot learning: train with the shipped config, evaluate the literature's protocols.

Trains on ``images_background.zip`` (validation on held-out background alphabets), then on
``images_evaluation.zip`` measures within-alphabet 20-way 1-shot (Lake; Koch's Table 2), random
N-way K-shot episodes across all evaluation alphabets (Vinyals et al.), and verification on
balanced pairs at the threshold calibrated on validation (Koch's Table 1). Writes
``bench/results/omniglot.json``. ``--compare-losses`` instead trains each loss on the same image
budget and writes ``bench/results/omniglot_losses.json``.

    python bench/omniglot.py [--config configs/omniglot.yaml] [KEY=VALUE ...]
    python bench/omniglot.py --compare-losses [--budget-images 150000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet.config import load_config
from twinnet.data.archives import read_items
from twinnet.embedding import embed_batches
from twinnet.io import load
from twinnet.protocols import evaluate_nway, evaluate_verification, evaluate_within_group
from twinnet.train import train_from_config

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data")) / "omniglot"


def evaluate_all(model_dir: Path, evaluation_zip: Path, episodes: int, seed: int = 0) -> dict[str, Any]:
    model = load(model_dir)
    items = read_items(evaluation_zip, model.config.input, class_depth=2)
    emb = embed_batches(model, items)
    out: dict[str, Any] = {}
    r = evaluate_within_group(model, items, 20, episodes, seed=seed, embeddings=emb)
    out["within_alphabet_20way_1shot"] = {"accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"]}
    for ways, shots in ((20, 1), (5, 1), (20, 5), (5, 5)):
        r = evaluate_nway(model, items, ways, shots, episodes, seed=seed, embeddings=emb)
        out[f"random_{ways}way_{shots}shot"] = {"accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"]}
    v, _, _ = evaluate_verification(
        model, items, n_pairs=20000, seed=seed, calibration=model.calibration, embeddings=emb
    )
    out["verification"] = {
        "accuracy": v.details["calibrated"]["accuracy"], "roc_auc": v.metrics["roc_auc"], "eer": v.metrics["eer"],
        "best_accuracy_on_test_pairs": v.metrics["best_accuracy"], "pairs": v.n_pairs,
        "threshold": v.details["calibrated"]["threshold"], "threshold_source": "validation alphabets",
    }  # fmt: skip
    return out


def train_and_evaluate(config_path: Path, overrides: list[str], out: Path, episodes: int) -> dict[str, Any]:
    cfg = load_config(config_path, [f"data.path={data_dir() / 'images_background.zip'}", *overrides])
    started = time.perf_counter()
    result = train_from_config(cfg, out)
    minutes = (time.perf_counter() - started) / 60
    figures = evaluate_all(result.model_dir, data_dir() / "images_evaluation.zip", episodes)
    history = result.history
    figures.update({
        "train_minutes": round(minutes, 2),
        "images_per_s": round(
            sum(h["items_per_s"] * h["seconds"] for h in history) / sum(h["seconds"] for h in history), 1
        ),
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "learning_curve": [
            {"epoch": h["epoch"], "minutes": round(sum(x["seconds"] for x in history[: i + 1]) / 60, 2),
             "train_loss": round(h["train_loss"], 4), "val_20way_within_alphabet": round(h.get("val_primary", 0.0), 4)}
            for i, h in enumerate(history)
        ],
        "config": str(config_path), "overrides": overrides,
    })  # fmt: skip
    return figures


LOSS_VARIANTS: dict[str, list[str]] = {
    "contrastive (euclidean, normalized)": [
        "loss.name=contrastive", "loss.params={margin: 1.0}", "train.batch_size=64",
    ],
    "triplet batch-hard": ["loss.name=triplet", "loss.params={margin: 0.2, mining: batch_hard}"],
    "triplet semi-hard": ["loss.name=triplet", "loss.params={margin: 0.2, mining: semi_hard}"],
    "bce + weighted L1 (Koch)": [
        "loss.name=bce", "loss.params={}", "model.comparator.name=weighted_l1", "model.normalize=false",
        "train.batch_size=64",
    ],
}  # fmt: skip


def compare_losses(config_path: Path, budget_images: int, episodes: int, out: Path) -> dict[str, Any]:
    rows = {}
    for name, overrides in LOSS_VARIANTS.items():
        pair_loss = any(o in ("loss.name=contrastive", "loss.name=bce") for o in overrides)
        per_epoch = 12800 if pair_loss else 25600  # the same number of images per epoch either way
        epochs = max(1, budget_images // 25600)
        extra = [*overrides, f"train.samples_per_epoch={per_epoch}", f"train.epochs={epochs}",
                 "train.early_stopping={patience: null}", "train.max_minutes=null"]  # fmt: skip
        Console(stderr=True).print(f"[bold]{name}[/]")
        figures = train_and_evaluate(config_path, extra, out / name.split()[0], episodes)
        rows[name] = {
            "within_alphabet_20way_1shot": figures["within_alphabet_20way_1shot"]["accuracy"],
            "random_20way_1shot": figures["random_20way_1shot"]["accuracy"],
            "random_5way_1shot": figures["random_5way_1shot"]["accuracy"],
            "verification_accuracy": figures["verification"]["accuracy"],
            "train_minutes": figures["train_minutes"],
        }
    return {"budget_images": budget_images, "losses": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "omniglot.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-omniglot")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--compare-losses", action="store_true")
    parser.add_argument("--budget-images", type=int, default=153600)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    started = time.perf_counter()
    console = Console()
    if args.compare_losses:
        figures = compare_losses(args.config, args.budget_images, args.episodes, args.out / "losses")
        table = Table(title=f"Omniglot, loss comparison at {args.budget_images} training images each")
        for col in ("loss", "within-alphabet 20-way", "random 20-way", "random 5-way", "verification", "minutes"):
            table.add_column(col)
        for name, r in figures["losses"].items():
            table.add_row(name, *(f"{r[k]:.4f}" for k in list(r)[:4]), f"{r['train_minutes']:.1f}")
        console.print(table)
        print(f"wrote {write_result('omniglot_losses', figures, started)}")
        return
    figures = train_and_evaluate(args.config, args.overrides, args.out, args.episodes)
    table = Table(title="Omniglot (trained on images_background, tested on images_evaluation)")
    for col in ("protocol", "accuracy", "95% CI"):
        table.add_column(col)
    for key in ("within_alphabet_20way_1shot", "random_20way_1shot", "random_5way_1shot", "random_20way_5shot",
                "random_5way_5shot"):  # fmt: skip
        table.add_row(key, f"{figures[key]['accuracy']:.4f}", f"± {figures[key]['ci95']:.4f}")
    v = figures["verification"]
    table.add_row(
        "verification (calibrated threshold)", f"{v['accuracy']:.4f}", f"AUC {v['roc_auc']:.4f}, EER {v['eer']:.4f}"
    )
    console.print(table)
    console.print(f"training {figures['train_minutes']:.1f} min, {figures['images_per_s']:.0f} images/s")
    print(f"wrote {write_result('omniglot', figures, started)}")


if __name__ == "__main__":
    main()
