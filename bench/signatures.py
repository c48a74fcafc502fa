"""Writer-independent signature verification on SigComp2011 (offline) and SVC2004 Task 2 (online).

Writers are split three ways (train / validation / test, none in two). Each model trains with its
shipped config on the training writers, early-stops on validation writers, calibrates the
protocol's threshold (EER, 5 references, min distance) on validation writers, and is tested on the
test writers: EER pooled and per writer, ROC AUC, FAR/FRR at the calibrated threshold, and for
SigComp the accuracy on the test writers' pairs of ``train_data.csv``. Writes
``bench/results/signatures.json``.

    python bench/signatures.py [--test-share 0.3]
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
from twinnet.data.sources import Dataset
from twinnet.data.splits import split_by_class
from twinnet.model import build_model
from twinnet.protocols import build_protocol, signature_pair_accuracy
from twinnet.runtime import seed_everything
from twinnet.train import Trainer, build_loss, load_training_data

REPO = Path(__file__).resolve().parents[1]


def run(kind: str, data: Path, test_share: float, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(REPO / "configs" / f"signatures-{kind}.yaml",
                      [f"data.path={data}", "data.val_classes=0", "train.progress=false", *overrides])  # fmt: skip
    items, _, _, _ = load_training_data(cfg)
    rest, test_idx = split_by_class(items.groups, test_share, seed=0)
    train_val = items.subset(rest)
    tr, va = split_by_class(train_val.groups, 0.2, seed=1)
    train, val, test = train_val.subset(tr), train_val.subset(va), items.subset(test_idx)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    started = time.perf_counter()
    # the data source's calibration hook: the signature protocol's own threshold on validation writers
    Trainer(model, build_loss(cfg), train, cfg.train, val_items=val, augment=cfg.data.augment,
            calibration_protocols=["signature"]).fit()  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    result = build_protocol("signature").evaluate(model, Dataset(test)).to_dict()
    result.update({"train_minutes": round(minutes, 2), "train_writers": len(set(train.groups)),
                   "validation_writers": len(set(val.groups))})  # fmt: skip
    if kind == "offline":
        csv = data / "train_data.csv"
        if csv.exists():
            result["pairs"] = signature_pair_accuracy(model, items, csv, writers=set(test.groups.tolist()),
                                                      calibration_writers=set(val.groups.tolist()))  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-share", type=float, default=0.3)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    started = time.perf_counter()
    figures = {
        "offline": run("offline", args.data / "signatures-sigcomp2011", args.test_share, []),
        "online": run("online", args.data / "svc2004" / "Task2", args.test_share, []),
    }
    figures["train_minutes"] = round(figures["offline"]["train_minutes"] + figures["online"]["train_minutes"], 2)
    table = Table(title="signature verification on unseen writers (5 references, min distance)")
    for col in ("data", "test writers", "EER", "mean writer EER", "ROC AUC", "FAR", "FRR", "train min"):
        table.add_column(col)
    for kind in ("offline", "online"):
        r = figures[kind]
        cells = [f"{r[k]:.3f}" for k in ("eer", "mean_writer_eer", "roc_auc", "far", "frr")]
        table.add_row(kind, str(r["test_writers"]), *cells, f"{r['train_minutes']:.1f}")
    Console().print(table)
    print(f"wrote {write_result('signatures', figures, started)}")


if __name__ == "__main__":
    main()
