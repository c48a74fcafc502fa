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
    print(f"wrote {write_result('quickstart', {'runs': runs, 'summary': summary}, started)}")


if __name__ == "__main__":
    main()
