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
    parser.add_argument("--parts", default="offline,online", help="comma-separated: offline, online")
    for kind in ("offline", "online"):
        parser.add_argument(f"--{kind}-override", action="append", default=[], metavar="KEY=VALUE",
                            help=f"a config override for the {kind} recipe (repeatable)")  # fmt: skip
    parser.add_argument("--out", default="signatures", help="result name under bench/results (signatures)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - {"offline", "online"}:
        parser.error(f"--parts takes offline and/or online, not {args.parts!r}")
    started = time.perf_counter()
    folders = {"offline": args.data / "signatures-sigcomp2011", "online": args.data / "svc2004" / "Task2"}
    overrides = {"offline": args.offline_override, "online": args.online_override}
    figures: dict[str, Any] = {kind: run(kind, folders[kind], args.test_share, overrides[kind]) for kind in parts}
    for kind in parts:
        figures[kind]["overrides"] = overrides[kind]
    figures["train_minutes"] = round(sum(figures[kind]["train_minutes"] for kind in parts), 2)
    table = Table(title="signature verification on unseen writers (5 references, min distance)")
    for col in ("data", "test writers", "EER", "mean writer EER", "ROC AUC", "FAR", "FRR", "train min"):
        table.add_column(col)
    for kind in parts:
        r = figures[kind]
        cells = [f"{r[k]:.3f}" for k in ("eer", "mean_writer_eer", "roc_auc", "far", "frr")]
        table.add_row(kind, str(r["test_writers"]), *cells, f"{r['train_minutes']:.1f}")
    Console().print(table)
    print(f"wrote {write_result(args.out, figures, started)}")


if __name__ == "__main__":
    main()
