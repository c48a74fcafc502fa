"""The quickstart over several seeds: how stable are its figures?

python bench/quickstart.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet.quickstart import run_quickstart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    started = time.perf_counter()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_quickstart(f"{tmp}/qs", seed=seed, progress=False)
        runs.append({
            "seed": seed, "seen_roc_auc": r["seen"]["roc_auc"], "seen_eer": r["seen"]["eer"],
            "unseen_roc_auc": r["unseen"]["roc_auc"], "unseen_eer": r["unseen"]["eer"],
            "unseen_oneshot_4way": r["unseen"]["oneshot_4way_accuracy"],
            "raw_pixel_unseen_roc_auc": r["unseen_raw_pixel_baseline"]["roc_auc"],
            "raw_pixel_unseen_oneshot_4way": r["unseen_raw_pixel_baseline"]["oneshot_4way_accuracy"],
            "centred_pixel_unseen_roc_auc": r["unseen_centred_pixel_baseline"]["roc_auc"],
            "centred_pixel_unseen_oneshot_4way": r["unseen_centred_pixel_baseline"]["oneshot_4way_accuracy"],
            "seconds": r["seconds"],
        })  # fmt: skip
    keys = [k for k in runs[0] if k != "seed"]
    summary = {k: {"mean": float(np.mean([r[k] for r in runs])), "min": float(np.min([r[k] for r in runs]))}
               for k in keys}  # fmt: skip
    table = Table(title="twinnet quickstart over seeds")
    table.add_column("seed")
    for k in keys:
        table.add_column(k.replace("_", " "))
    for r in runs:
        table.add_row(str(r["seed"]), *(f"{r[k]:.3f}" if k != "seconds" else f"{r[k]:.0f}" for k in keys))
    table.add_row("mean", *(f"{summary[k]['mean']:.3f}" for k in keys))
    Console().print(table)
    # the target (issue 14): the learned model beats the raw-pixel distance on every seed
    margins = {
        f"{metric}_vs_{ref}": [r[f"unseen_{metric}"] - r[f"{ref}_unseen_{metric}"] for r in runs]
        for metric in ("roc_auc", "oneshot_4way") for ref in ("raw_pixel", "centred_pixel")
    }  # fmt: skip
    margin_summary = {k: {"min": float(np.min(v)), "mean": float(np.mean(v))} for k, v in margins.items()}
    for k, v in margin_summary.items():
        print(f"unseen {k.replace('_', ' ')}: min {v['min']:+.3f}, mean {v['mean']:+.3f}")
    figures = {
        "runs": runs, "summary": summary, "margins": margin_summary,
        "beats_raw_pixels_on_every_seed": all(margin_summary[f"{m}_vs_raw_pixel"]["min"] > 0
                                              for m in ("roc_auc", "oneshot_4way")),
    }  # fmt: skip
    print(f"wrote {write_result('quickstart', figures, started)}")


if __name__ == "__main__":
    main()
