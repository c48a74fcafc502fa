"""SiamFC tracking against OpenCV's CSRT and KCF and the still-box baseline, measured in one run.

One-pass evaluation (OTB OPE: start from the first frame's box, track to the end) on the 5 OTB
sequences of ``tracking/val`` and VOT2015's ``bag``: success AUC, precision at 20 px and speed per
sequence and overall (the mean over the 6 sequences). Speed is given as frames per wall-clock
second (``fps``: a lower bound on a shared machine; the load average is recorded) and per CPU
second (``frames_per_cpu_second``: what the tracker costs, which other programs do not inflate).
Writes ``bench/results/tracking.json``.

    python bench/tracking.py                     # trains configs/tracking-siamfc.yaml first (≤ 60 min)
    python bench/tracking.py --model runs/siamfc # measures an already trained run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet.config import load_config
from twinnet.io import load, resolve_model_dir
from twinnet.runtime import data_root
from twinnet.tracking import build_anchor, build_tracker, read_sequence, read_sequences, run_tracker, sequence_figures
from twinnet.tracking.metrics import mean_figures
from twinnet.train import train_from_config

REPO = Path(__file__).resolve().parents[1]
TRACKERS = ("twinnet", "csrt", "kcf", "still")


def train(run_dir: Path, console: Console) -> tuple[Path, float]:
    cfg = load_config(REPO / "configs" / "tracking-siamfc.yaml", [f"data.path={data_root() / 'tracking' / 'train'}"])
    result = train_from_config(cfg, run_dir, console=console)
    assert result.model_dir is not None
    return result.model_dir, result.train_seconds / 60


def training_minutes(model: Path) -> tuple[float | None, float | None]:
    """A run directory's training time: wall-clock minutes from the run's start (``config.yaml`` is
    written first) to the saved model (its manifest is written last), validation included; and the
    minutes of the training epochs alone (``metrics.jsonl``). ``None`` when ``model`` is no run."""
    run = model if (model / "metrics.jsonl").is_file() else resolve_model_dir(model).parent
    log, start, end = run / "metrics.jsonl", run / "config.yaml", run / "model" / "twinnet.json"
    if not log.is_file():
        return None, None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    epochs = sum(r.get("seconds", 0.0) for r in records) / 60
    wall = (end.stat().st_mtime - start.stat().st_mtime) / 60 if start.is_file() and end.is_file() else None
    return wall, epochs


def measure(model_dir: Path, threads: int, max_frames: int | None = None) -> dict[str, Any]:
    torch.set_num_threads(threads)
    root = data_root() / "tracking"
    sequences = [*read_sequences(root / "val"), read_sequence(root / "vot15_bag")]
    if max_frames is not None:  # a quick check of the script, not a measurement
        sequences = [s.head(max_frames) for s in sequences]
    model = load(model_dir)
    out: dict[str, Any] = {}
    load_before = os.getloadavg()
    for name in TRACKERS:
        per: dict[str, dict[str, Any]] = {}
        for seq in sequences:
            tracker = build_tracker(model) if name == "twinnet" else build_anchor(name)
            result = run_tracker(tracker, seq)
            assert seq.boxes is not None
            figures = sequence_figures(result.boxes, seq.boxes)
            figures.pop("success_curve")
            figures.update(fps=round(result.fps, 2), frames_per_cpu_second=round(result.frames_per_cpu_second, 2),
                           seconds=result.seconds, cpu_seconds=result.cpu_seconds,
                           tracked_frames=len(result.boxes) - 1)  # fmt: skip
            per[seq.name] = figures
        overall = mean_figures(per)
        cpu = sum(r["cpu_seconds"] for r in per.values())
        out[name] = {
            "success_auc": round(overall["success_auc"], 4),
            "precision_20": round(overall["precision_20"], 4),
            "fps": round(overall.get("fps", 0.0), 2),
            "frames_per_cpu_second": round(sum(r["tracked_frames"] for r in per.values()) / cpu, 2) if cpu else None,
            "val_success_auc": round(float(np.mean([per[s.name]["success_auc"] for s in sequences[:-1]])), 4),
            "bag_success_auc": round(per["vot15_bag"]["success_auc"], 4),
            "per_sequence": {
                k: {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()} for k, r in per.items()
            },
        }
    out["speed_1_thread"] = speed_probe(model, sequences[0])
    torch.set_num_threads(threads)
    out["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    return out


def speed_probe(model: Any, sequence: Any) -> dict[str, Any]:
    """The tracker's cost on one thread (3 scales): CPU milliseconds per frame, and the frame rate
    that makes on one idle core. On a shared machine the wall-clock rate of a 2-thread run is a lower
    bound (and OpenMP threads that spin while the other waits for a core inflate CPU time), so this
    is the machine-independent figure of what a frame costs."""
    torch.set_num_threads(1)
    result = run_tracker(build_tracker(model), sequence)
    ms = 1000 * result.cpu_seconds / max(1, len(result.boxes) - 1)
    return {"sequence": sequence.name, "threads": 1, "cpu_ms_per_frame": round(ms, 2),
            "fps_one_idle_core": round(1000 / ms, 1) if ms else None, "wall_fps": round(result.fps, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A trained run or model directory (else train the shipped config).")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "siamfc-bench")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while tracking (the target: 2 cores)")
    parser.add_argument("--max-frames", type=int, help="Only the first frames of each sequence (a smoke test).")
    parser.add_argument("--note", default="", help="What else ran on the machine meanwhile (kept in the JSON).")
    args = parser.parse_args()
    console = Console(stderr=True)
    started = time.perf_counter()
    if args.model is None:
        model_dir, minutes = train(args.run_dir, console)
        epoch_minutes, trained_here = training_minutes(args.run_dir)[1], True
    else:
        (minutes, epoch_minutes), trained_here = training_minutes(args.model), False
        model_dir = resolve_model_dir(args.model)
    figures = measure(model_dir, args.threads, args.max_frames)
    config = json.loads((model_dir / "config.json").read_text())
    metrics_file = model_dir / "metrics.json"
    ours, csrt = figures["twinnet"], figures["csrt"]
    ratio = ours["success_auc"] / csrt["success_auc"] if csrt["success_auc"] else None
    result = {
        **{name: figures[name] for name in TRACKERS},
        "speed_1_thread": figures["speed_1_thread"],
        "auc_ratio_vs_csrt": None if ratio is None else round(ratio, 4),
        "model": {
            "dir": str(model_dir),
            "encoder": config["encoder"],
            "tracker": config["tracker"],
            "validation": json.loads(metrics_file.read_text()) if metrics_file.exists() else None,
        },
        "training": {
            "minutes": None if minutes is None else round(minutes, 1),
            "minutes_in_training_epochs": None if epoch_minutes is None else round(epoch_minutes, 1),
            "epochs": len((model_dir.parent / "metrics.jsonl").read_text().splitlines())
            if (model_dir.parent / "metrics.jsonl").is_file()
            else None,
            "trained_in_this_run": trained_here,
            "config": "configs/tracking-siamfc.yaml",
            "threads": 2,
        },
        "tracking_threads": args.threads,
        "max_frames": args.max_frames,
        "load_average": figures["load_average"],
        "note": args.note,
        "targets": {
            "auc_ratio_vs_csrt": {"target": 1.0, "measured": None if ratio is None else round(ratio, 4)},
            "fps": {
                "target": 25.0,
                "measured_wall_2_threads_shared_machine": ours["fps"],
                "one_idle_core": figures["speed_1_thread"]["fps_one_idle_core"],
            },
            "training_minutes": {"target": 60.0, "measured": None if minutes is None else round(minutes, 1)},
        },
    }
    path = write_result("tracking", result, started)
    table = Table(title="one-pass evaluation: val/ (5 OTB) + vot15_bag")
    for column in ("tracker", "success AUC", "precision@20", "fps", "frames/CPU-s"):
        table.add_column(column)
    for name in TRACKERS:
        r = figures[name]
        table.add_row(name, f"{r['success_auc']:.3f}", f"{r['precision_20']:.3f}", f"{r['fps']:.1f}",
                      f"{r['frames_per_cpu_second']}")  # fmt: skip
    console.print(table)
    console.print(f"AUC ratio vs CSRT: {result['auc_ratio_vs_csrt']}; written to {path}")


if __name__ == "__main__":
    main()
