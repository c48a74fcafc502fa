"""Attention encoders against the convolutional and recurrent ones, at the same time budget.

Omniglot: ``conv4`` against ``vit`` (a conv stem of two blocks, then three attention blocks on its 7×7 cells), each
trained with ``configs/omniglot.yaml`` for ``--omniglot-minutes`` (``train.max_minutes``), then
tested on ``images_evaluation`` (within-alphabet 20-way, random 20-way and 5-way 1-shot,
verification). Online signatures (SVC2004 Task 2): ``gru`` against ``trajectory_transformer``, each
trained with ``configs/signatures-online.yaml`` for ``--signature-minutes`` on the writer split of
``bench/signatures.py``, tested on unseen writers (EER, 5 references, min distance). Writes
``bench/results/attention.json``; ``--part`` runs one half and keeps the other half's figures.

    python bench/attention.py [--part omniglot|signatures|all] [--omniglot-minutes 5] [--signature-minutes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, write_result
from rich.console import Console
from rich.table import Table
from signatures import run as run_signatures

from twinnet.config import load_config
from twinnet.data.archives import read_items
from twinnet.embedding import embed_batches
from twinnet.io import load
from twinnet.protocols import evaluate_nway, evaluate_verification, evaluate_within_group
from twinnet.train import train_from_config

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))

OMNIGLOT_VARIANTS: dict[str, list[str]] = {
    "conv4": [],
    "vit (conv stem + attention)": [
        "model.encoder.name=vit",
        "model.encoder.params={stem: conv, conv_blocks: 2, dim: 64, heads: 4, depth: 3, embedding_dim: 64}",
    ],
}
SIGNATURE_VARIANTS: dict[str, list[str]] = {
    "gru": [],
    "trajectory_transformer": [
        "model.encoder.name=trajectory_transformer",
        "model.encoder.params={dim: 64, heads: 4, depth: 3, downsample: 2, embedding_dim: 64, dropout: 0.1}",
    ],
}


def evaluate_omniglot(model_dir: Path, evaluation_zip: Path, episodes: int) -> dict[str, Any]:
    """The protocols of ``bench/omniglot.py`` (1-shot only), on ``images_evaluation``."""
    model = load(model_dir)
    items = read_items(evaluation_zip, model.config.input, class_depth=2)
    emb = embed_batches(model, items)
    r = evaluate_within_group(model, items, 20, episodes, seed=0, embeddings=emb)
    out: dict[str, Any] = {"within_alphabet_20way_1shot": {"accuracy": r["accuracy"], "ci95": r["ci95"]}}
    for ways in (20, 5):
        r = evaluate_nway(model, items, ways, 1, episodes, seed=0, embeddings=emb)
        out[f"random_{ways}way_1shot"] = {"accuracy": r["accuracy"], "ci95": r["ci95"]}
    v, _, _ = evaluate_verification(model, items, n_pairs=4000, seed=0, calibration=model.calibration, embeddings=emb)
    out["verification"] = {
        "accuracy": v.details["calibrated"]["accuracy"],
        "roc_auc": v.metrics["roc_auc"],
        "eer": v.metrics["eer"],
    }
    out["parameters"] = sum(p.numel() for p in model.parameters())
    return out


def omniglot(minutes: float, episodes: int, out: Path, common: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, overrides in OMNIGLOT_VARIANTS.items():
        Console(stderr=True).print(f"[bold]omniglot: {name}[/]")
        extra = [
            f"data.path={DATA / 'omniglot' / 'images_background.zip'}",
            *overrides,
            f"train.max_minutes={minutes}",
            "train.epochs=1000",
            "train.progress=false",
            *common,
        ]
        cfg = load_config(REPO / "configs" / "omniglot.yaml", extra)
        started = time.perf_counter()
        result = train_from_config(cfg, out / name.split()[0] / str(len(rows)))
        train_minutes = (time.perf_counter() - started) / 60
        assert result.model_dir is not None
        figures = evaluate_omniglot(result.model_dir, DATA / "omniglot" / "images_evaluation.zip", episodes)
        history = result.history
        rows[name] = {
            "within_alphabet_20way_1shot": figures["within_alphabet_20way_1shot"],
            "random_20way_1shot": figures["random_20way_1shot"],
            "random_5way_1shot": figures["random_5way_1shot"],
            "verification": figures["verification"],
            "train_minutes": round(train_minutes, 2),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "images_per_s": round(
                sum(h["items_per_s"] * h["seconds"] for h in history) / max(1e-9, sum(h["seconds"] for h in history)), 1
            ),
            "parameters": figures["parameters"],
            "overrides": overrides,
        }
    return {"budget_minutes": minutes, "episodes": episodes, "encoders": rows}


def signatures(minutes: float, common: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, overrides in SIGNATURE_VARIANTS.items():
        Console(stderr=True).print(f"[bold]online signatures: {name}[/]")
        r = run_signatures(
            "online", DATA / "svc2004" / "Task2", 0.3, [*overrides, f"train.max_minutes={minutes}", *common]
        )
        rows[name] = {
            k: r[k]
            for k in (
                "eer",
                "mean_writer_eer",
                "roc_auc",
                "far",
                "frr",
                "test_writers",
                "train_minutes",
                "train_writers",
                "validation_writers",
            )
        }
        rows[name]["overrides"] = overrides
    return {"budget_minutes": minutes, "encoders": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("omniglot", "signatures", "all"), default="all")
    parser.add_argument("--omniglot-minutes", type=float, default=5.0)
    parser.add_argument("--signature-minutes", type=float, default=4.0)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-attention")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (KEY=VALUE)")
    args = parser.parse_args()
    started = time.perf_counter()
    previous = RESULTS / "attention.json"
    figures: dict[str, Any] = {}
    if previous.exists():
        old = json.loads(previous.read_text())
        figures = {k: old[k] for k in ("omniglot", "signatures") if k in old}
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if args.part in ("omniglot", "all"):
        figures["omniglot"] = {
            **omniglot(args.omniglot_minutes, args.episodes, args.out, args.overrides),
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        }
    if args.part in ("signatures", "all"):
        figures["signatures"] = {
            **signatures(args.signature_minutes, args.overrides),
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        }
    console = Console()
    if "omniglot" in figures:
        table = Table(title=f"Omniglot, {figures['omniglot']['budget_minutes']} min of training each")
        for col in (
            "encoder",
            "within-alphabet 20-way",
            "random 20-way",
            "random 5-way",
            "verification",
            "epochs",
            "images/s",
            "params",
        ):
            table.add_column(col)
        for name, r in figures["omniglot"]["encoders"].items():
            table.add_row(
                name,
                *(
                    f"{r[k]['accuracy']:.4f}"
                    for k in ("within_alphabet_20way_1shot", "random_20way_1shot", "random_5way_1shot", "verification")
                ),
                str(r["epochs_run"]),
                f"{r['images_per_s']:.0f}",
                str(r["parameters"]),
            )
        console.print(table)
    if "signatures" in figures:
        table = Table(title=f"SVC2004 online, {figures['signatures']['budget_minutes']} min of training each")
        for col in ("encoder", "EER", "mean writer EER", "ROC AUC", "train min"):
            table.add_column(col)
        for name, r in figures["signatures"]["encoders"].items():
            table.add_row(
                name,
                f"{r['eer']:.4f}",
                f"{r['mean_writer_eer']:.4f}",
                f"{r['roc_auc']:.4f}",
                f"{r['train_minutes']:.1f}",
            )
        console.print(table)
    print(f"wrote {write_result('attention', figures, started)}")


if __name__ == "__main__":
    main()
