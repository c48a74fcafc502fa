"""Learning without labels, measured: Omniglot trained on ``images_background`` with its character
labels dropped, evaluated on the 20 evaluation alphabets it never saw.

In one run, at the same training budget: raw-pixel distance, the same encoder untrained, twinnet's
supervised recipe (``configs/omniglot.yaml``) and the self-supervised one
(``configs/selfsup-omniglot.yaml``); then the label-efficiency curve: the supervised recipe on a
part of the labels, from scratch and started from the self-supervised model (``--init-from``).
Writes ``bench/results/selfsup.json``.

    python bench/selfsup.py [--minutes 10] [--finetune-minutes 2] [--episodes 400]

``--one-label``: the label-efficiency point of one labelled drawing per character, from scratch and
from the self-supervised model (``selfsup_one_label.json``).
``--lfw``: faces without identities (``configs/selfsup-faces.yaml``) on the training people of
``bench/faces.py``'s LFW split, 10-fold pairs accuracy on its test people against eigenfaces, then the
face recipe on a tenth of the names from scratch and from that model (``selfsup_lfw.json``).
``--digits-only``: each label-free objective on the quickstart digits (``selfsup_digits.json``).
``--text``: all-MiniLM-L6-v2 adapted without labels (``configs/selfsup-text.yaml``) on the texts of
the STS-B training pairs and of 80% of MRPC's training pairs, against the model as shipped in the
same run: STS-B dev Spearman, and MRPC accuracy / F1 on the other 20% at a threshold calibrated as
``bench/text.py`` does (``selfsup_text.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS, machine, write_result
from rich.console import Console
from rich.table import Table

from twinnet.calibrate import calibrate
from twinnet.compare import EuclideanDistance
from twinnet.config import Config, load_config
from twinnet.data.archives import read_items
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.data.text import TextPairs, read_text_pair_file
from twinnet.embedding import embed_batches
from twinnet.io import init_encoders, load
from twinnet.model import AnyTwin, TwinNetwork, build_model
from twinnet.protocols import (
    build_protocol,
    evaluate_nway,
    evaluate_pairs,
    evaluate_sts,
    evaluate_within_group,
    pair_similarities,
)
from twinnet.runtime import seed_everything
from twinnet.train import Trainer, build_loss, train_from_config
from twinnet.training.data import load_datasets

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def shared_data() -> Path:
    return Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))


def data_dir() -> Path:
    return shared_data() / "omniglot"


class _Pixels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def evaluate(model: AnyTwin, items: ItemSet, episodes: int) -> dict[str, Any]:
    """The one-shot protocols on the evaluation alphabets, and k-NN accuracy over all their characters."""
    emb = embed_batches(model, items)
    out: dict[str, Any] = {}
    r = evaluate_within_group(model, items, 20, episodes, seed=0, embeddings=emb)
    out["within_alphabet_20way_1shot"] = round(r["accuracy"], 4)
    for ways in (5, 20):
        r = evaluate_nway(model, items, ways, 1, episodes, seed=0, embeddings=emb)
        out[f"random_{ways}way_1shot"] = round(r["accuracy"], 4)
    knn = build_protocol("knn", {"k": 1}).evaluate(model, Dataset(items))
    out["knn_1nn_accuracy_all_659_characters"] = round(knn["knn_accuracy"], 4)
    return out


def omniglot_config(path: Path, minutes: float, extra: list[str] = ()) -> Config:  # type: ignore[assignment]
    return load_config(path, [f"data.path={data_dir() / 'images_background.zip'}", f"train.max_minutes={minutes}",
                              "train.epochs=1000", "train.early_stopping={patience: null}", *extra])  # fmt: skip


def train_timed(config: Config, out: Path) -> tuple[Path, float, int]:
    started = time.perf_counter()
    result = train_from_config(config, out, console=console)
    assert result.model_dir is not None
    return result.model_dir, (time.perf_counter() - started) / 60, result.epochs_run


def few_labels(items: ItemSet, per_class: int | None, class_share: float | None, seed: int,
               rest_unlabelled: bool = False) -> ItemSet:  # fmt: skip
    """``per_class`` labelled drawings of every training character, or all drawings of ``class_share``
    of the characters (seeded); neither: every item. ``rest_unlabelled``: the other classes' items
    stay, without their labels (mixed data: each its own class)."""
    from twinnet.data.items import as_unlabelled, join_items

    rng = np.random.default_rng(seed)
    if per_class is None and class_share is None:
        return items
    if class_share is not None:
        classes = np.unique(items.labels)
        keep = rng.choice(classes, max(2, round(class_share * len(classes))), replace=False)
        named = np.isin(items.labels, keep)
        labelled = items.subset(np.nonzero(named)[0])
        return join_items(labelled, as_unlabelled(items.subset(np.nonzero(~named)[0]))) if rest_unlabelled else labelled
    chosen = [rng.permutation(np.nonzero(items.labels == c)[0])[:per_class] for c in np.unique(items.labels)]
    return items.subset(np.sort(np.concatenate(chosen)))


def finetune(config: Config, items_share: dict[str, Any], init: Path | None, out: Path) -> tuple[Path, float]:
    """The supervised recipe on part of the labels, from scratch or from ``init``."""
    seed_everything(config.train.seed)
    data = load_datasets(config)
    train = replace(data.train, items=few_labels(data.train.items, items_share.get("per_class"),
                                                 items_share.get("class_share"), config.train.seed,
                                                 items_share.get("rest_unlabelled", False)))  # fmt: skip
    model = build_model(config.model)
    if init is not None:
        init_encoders(model, init)
    started = time.perf_counter()
    trainer = Trainer.from_datasets(model, build_loss(config), train, config.train, val=data.val,
                                    augment=config.data.augment, run_dir=out, run_config=config,
                                    console=console)  # fmt: skip
    result = trainer.fit()
    assert result.model_dir is not None
    return result.model_dir, (time.perf_counter() - started) / 60


PSEUDO_LABELS: dict[str, Any] = {
    "loss": {"name": "triplet", "params": {"margin": 0.3, "mining": "all", "reduction": "mean_nonzero"}},
    "train": {
        "batch_plan": "pseudo_labels",
        "plan": {"clusters": 30, "every": 2},
        "classes_per_batch": 8,
        "items_per_class": 8,
        "instance_weight": 1.0,
        "class_weight": 0.3,
    },
}

DIGITS_OBJECTIVES: dict[str, dict[str, Any]] = {
    "ntxent": {"loss": {"name": "ntxent", "params": {"temperature": 0.2, "projector": [128, 64]}}},
    "simsiam": {"loss": {"name": "simsiam", "params": {"projector": [128, 128]}}},
    "byol": {"loss": {"name": "byol", "params": {"projector": [128, 64]}}},
    "barlow_twins": {"loss": {"name": "barlow_twins", "params": {"projector": [256, 256], "off_diagonal": 0.005}}},
    "vicreg": {"loss": {"name": "vicreg", "params": {"projector": [256, 256]}}, "normalize": False},
    "pseudo-labels (triplet on 30 k-means clusters + views)": PSEUDO_LABELS,
    # the supervised quickstart's input-similarity term, here on clusters instead of classes
    "pseudo-labels + input similarity (weight 10)": {
        **PSEUDO_LABELS,
        "train": {**PSEUDO_LABELS["train"], "class_weight": 1.0, "input_similarity_weight": 10.0},
    },
}


def digits(seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 20) -> dict[str, Any]:
    """Each objective on the quickstart's digits 0–5 without their labels, measured on unseen 6–9
    with the quickstart's protocols; raw pixels and the supervised quickstart in the same run."""
    from twinnet.config import parse_config
    from twinnet.data.digits import digits_items
    from twinnet.data.items import as_unlabelled
    from twinnet.protocols import evaluate_verification
    from twinnet.quickstart import QUICKSTART_CONFIG, raw_pixel_baseline, run_quickstart

    items = digits_items()
    seen = np.isin(items.labels, (0, 1, 2, 3, 4, 5))
    train, unseen = as_unlabelled(items.subset(np.nonzero(seen)[0])), items.subset(np.nonzero(~seen)[0])

    def measure(model: AnyTwin, seed: int) -> dict[str, float]:
        v, _, _ = evaluate_verification(model, unseen, n_pairs=4000, seed=seed)
        oneshot = evaluate_nway(model, unseen, ways=4, shots=1, episodes=1000, seed=seed)
        return {"roc_auc": v.metrics["roc_auc"], "oneshot_4way": oneshot.metrics["accuracy"]}

    rows: dict[str, dict[str, Any]] = {}
    raw = [raw_pixel_baseline(unseen, seed) for seed in seeds]
    rows["raw pixels"] = {
        "roc_auc": [r["roc_auc"] for r in raw],
        "oneshot_4way": [r["oneshot_4way_accuracy"] for r in raw],
    }
    sup = [run_quickstart(REPO / "runs" / f"bench-selfsup-digits-sup{seed}", seed=seed, progress=False,
                          console=Console(stderr=True, quiet=True)) for seed in seeds]  # fmt: skip
    rows["supervised quickstart (labels of 0-5)"] = {
        "roc_auc": [r["unseen"]["roc_auc"] for r in sup],
        "oneshot_4way": [r["unseen"]["oneshot_4way_accuracy"] for r in sup],
    }
    for name, spec in DIGITS_OBJECTIVES.items():
        started = time.perf_counter()
        runs = []
        for seed in seeds:
            model_cfg = {**QUICKSTART_CONFIG["model"], "comparator": {"name": "cosine"},
                         "normalize": spec.get("normalize", True)}  # fmt: skip
            train_cfg = {"seed": seed, "epochs": epochs, "batch_size": 128, "lr": 3e-3, "weight_decay": 5e-4,
                         "progress": False, "early_stopping": {"patience": None}, "samples_per_epoch": 1536,
                         **spec.get("train", {})}  # fmt: skip
            cfg = parse_config({"model": model_cfg, "data": {"augment": {**QUICKSTART_CONFIG["data"]["augment"],
                                "rotation": 15, "scale": [0.8, 1.2], "translate": 0.1}},
                                "loss": spec["loss"], "train": train_cfg})  # fmt: skip
            seed_everything(seed)
            model = build_model(cfg.model)
            Trainer(model, build_loss(cfg), train, cfg.train, augment=cfg.data.augment).fit()
            runs.append(measure(model, seed))
        rows[name] = {"roc_auc": [r["roc_auc"] for r in runs], "oneshot_4way": [r["oneshot_4way"] for r in runs],
                      "seconds_per_run": round((time.perf_counter() - started) / len(seeds), 1)}  # fmt: skip
    for row in rows.values():
        row["roc_auc_mean"] = round(float(np.mean(row["roc_auc"])), 4)
        row["oneshot_4way_mean"] = round(float(np.mean(row["oneshot_4way"])), 4)
    return {"seeds": list(seeds), "epochs": epochs, "rows": rows}


TEXT_CONFIG = REPO / "configs" / "selfsup-text.yaml"


def write_sentences(texts: Sequence[str], path: Path) -> Path:
    """``texts`` as a sentences file, one per line (what the ``sentences`` data source reads)."""
    if any("\n" in t or "\r" in t for t in texts):
        raise ValueError("texts with line breaks cannot be written one per line")
    path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    return path


def mrpc_figures(model: AnyTwin, held: TextPairs, test: TextPairs) -> dict[str, float]:
    """Accuracy and F1 on ``test`` at the threshold of best accuracy on ``held`` (as bench/text.py)."""
    native, _ = pair_similarities(model, held.items, held.pairs)
    calibration = calibrate(native, held.pairs.same, model.comparator.orientation)
    figures = evaluate_pairs(model, test.items, test.pairs, calibration).to_dict()
    return {"accuracy": round(figures["accuracy"], 4), "f1": round(figures["f1"], 4)}


def text_adaptation(minutes: float, out: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """MiniLM as shipped against MiniLM adapted without labels, in one run.

    20% of MRPC's training pairs (seeded, as bench/text.py) are the MRPC test pairs, calibrated on
    10% of the other 80%. The config reads the STS-B training pairs and all of MRPC's; here the
    adaptation texts are one sentences file of the STS-B training pairs' texts and the 80%'s, less
    every text of the MRPC test pairs (STS-B's MSRpar pairs are MRPC sentences), so neither test
    set's texts are trained on: the config's ``data.exclude_val_texts`` leaves out the STS-B dev texts."""
    root = shared_data()
    os.environ["TWINNET_DATA"] = str(root)  # the config names its files under ${TWINNET_DATA}
    out.mkdir(parents=True, exist_ok=True)
    dev = read_text_pair_file(root / "stsbenchmark" / "sts-dev.csv")
    mrpc_train, mrpc_test = read_text_pair_file(root / "mrpc" / "msr_paraphrase_train.txt").split(0.2, seed=0)
    _, mrpc_held = mrpc_train.split(0.1, seed=0)
    unseen = set(mrpc_test.items.texts)
    texts = read_text_pair_file(root / "stsbenchmark" / "sts-train.csv").items.texts + mrpc_train.items.texts
    sentences = write_sentences([t for t in texts if t not in unseen], out / "adaptation-sentences.txt")
    cfg = load_config(TEXT_CONFIG, [f"data.path={sentences}", "data.unlabelled_path=null",
                                    f"train.max_minutes={minutes}", *overrides])  # fmt: skip
    adaptation = set(load_datasets(cfg).train.items.texts or [])

    seed_everything(cfg.train.seed)
    shipped = build_model(cfg.model).eval()
    console.print("[bold]MiniLM as shipped[/]")
    before, mrpc_before = evaluate_sts(shipped, dev.items, dev.pairs), mrpc_figures(shipped, mrpc_held, mrpc_test)
    console.print("[bold]adapted without labels[/]")
    started = time.perf_counter()
    result = train_from_config(cfg, out / "text", console=console)
    minutes_run = (time.perf_counter() - started) / 60
    assert result.model_dir is not None
    adapted = load(result.model_dir)
    after, mrpc_after = evaluate_sts(adapted, dev.items, dev.pairs), mrpc_figures(adapted, mrpc_held, mrpc_test)
    keys = ("epoch", "train_loss", "val_spearman", "normalised_std", "seconds", "items_per_s")
    curve = [{"epoch": 0, "val_spearman": result.start_metric},
             *({k: r[k] for k in keys if k in r} for r in result.history)]  # fmt: skip
    delta = after["spearman"] - before["spearman"]
    return {
        "text": {
            "stsb_dev_spearman_shipped": round(before["spearman"], 4),
            "stsb_dev_spearman_adapted": round(after["spearman"], 4),
            "delta": round(delta, 4),
            "stsb_dev_pearson_shipped": round(before["pearson"], 4),
            "stsb_dev_pearson_adapted": round(after["pearson"], 4),
            "saved_epoch": result.best_epoch,
            "saved_model_is_the_shipped_one": result.best_epoch == 0,
            "best_trained_epoch_spearman": max((r["val_spearman"] for r in result.history), default=None),
            "epochs_run": result.epochs_run,
            "texts_seen": result.epochs_run * (cfg.train.samples_per_epoch or len(adaptation)),
            "learning_curve": curve,
            "adaptation_texts_distinct": len(adaptation),
            "stsb_dev_texts_in_adaptation": len(adaptation & set(dev.items.texts)),
            "mrpc_test_texts_in_adaptation": len(adaptation & set(mrpc_test.items.texts)),
            "mrpc": {
                "shipped": mrpc_before,
                "adapted": mrpc_after,
                "test_pairs": len(mrpc_test),
                "calibration_pairs": len(mrpc_held),
            },
            "target": "STS-B dev Spearman never below the shipped model's by more than 0.005",
            "met": bool(delta >= -0.005),
        },
        "train_minutes": round(minutes_run, 2),
        "budget_minutes": minutes,
        "config": str(TEXT_CONFIG.relative_to(REPO)),
        "overrides": list(overrides),
    }


def text_runs(figures: dict[str, Any]) -> dict[str, Any]:
    """The ``selfsup_text.json`` figures: the top level is the run of the config as shipped, with
    its ``run`` (command, date, load); a run with ``--text-override`` goes into ``variants`` beside
    the earlier ones (each with its own), and the other runs are kept from the previous file."""
    path = RESULTS / "selfsup_text.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    run = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "load_average_1_5_15": machine()["load_average_1_5_15"]}  # fmt: skip
    variants = dict(previous.get("variants", {}))
    if not figures["overrides"]:
        return {**figures, "run": run, "variants": variants}
    variants[", ".join(figures["overrides"])] = {**figures, "run": run}
    kept = {k: v for k, v in previous.items() if k not in ("command", "machine", "seconds", "date")}
    return {**kept, "variants": variants}


LABEL_SETTINGS: dict[str, dict[str, Any]] = {"5 per class": {"per_class": 5}, "10% of classes": {"class_share": 0.1}}
#: ``--one-label``: one labelled drawing per character. A P×K batch takes a class of one item only
#: when every item comes as two augmented views (``train.instance_weight``), so both starts get that term.
ONE_LABEL: dict[str, dict[str, Any]] = {"1 per class": {"per_class": 1, "overrides": ["train.instance_weight=1.0"]}}


def label_curve(settings: dict[str, dict[str, Any]], args: argparse.Namespace, ssl_dir: Path,
                items: ItemSet) -> list[dict[str, Any]]:  # fmt: skip
    """The supervised recipe on part of the labels, from scratch and from the self-supervised model."""
    curve = []
    for name, share in settings.items():
        ft_cfg = omniglot_config(args.supervised_config, args.finetune_minutes, share.get("overrides", []))
        for start, init in (("scratch", None), ("self-supervised", ssl_dir)):
            console.print(f"[bold]{name}, from {start}[/]")
            model_dir, minutes = finetune(ft_cfg, share, init, args.out / f"labels-{name.split()[0]}-{start}")
            figures = evaluate(load(model_dir), items, args.episodes)
            curve.append({"labels": name, "start": start, **figures, "train_minutes": round(minutes, 2),
                          "overrides": share.get("overrides", [])})  # fmt: skip
    return curve


def one_label(args: argparse.Namespace, started: float) -> None:
    """``--one-label``: the label-efficiency curve's point of one labelled drawing per character."""
    ssl_cfg = omniglot_config(args.ssl_config, args.minutes)
    items = read_items(data_dir() / "images_evaluation.zip", ssl_cfg.model.input, class_depth=2)
    ssl_minutes = None
    if args.ssl_model is None:
        console.print("[bold]self-supervised[/]")
        ssl_dir, ssl_minutes, _ = train_timed(ssl_cfg, args.out / "ssl")
    else:
        ssl_dir = args.ssl_model
    ssl_row = evaluate(load(ssl_dir), items, args.episodes)
    curve = label_curve(ONE_LABEL, args, ssl_dir, items)
    result = {"self_supervised": {**ssl_row, "train_minutes": None if ssl_minutes is None else round(ssl_minutes, 2),
                                  "model": str(ssl_dir)},
              "label_efficiency": curve, "episodes": args.episodes, "finetune_budget_minutes": args.finetune_minutes,
              "configs": {"self_supervised": str(args.ssl_config.relative_to(REPO)),
                          "supervised": str(args.supervised_config.relative_to(REPO))}}  # fmt: skip
    path = write_result("selfsup_one_label", result, started)
    keys = ["random_5way_1shot", "random_20way_1shot", "within_alphabet_20way_1shot",
            "knn_1nn_accuracy_all_659_characters"]  # fmt: skip
    table = Table(title=f"one labelled drawing per character, {args.episodes} episodes")
    for column in ("system", *keys):
        table.add_column(column)
    table.add_row("self-supervised (no labels)", *[f"{ssl_row[k]:.3f}" for k in keys])
    for row in curve:
        table.add_row(f"{row['labels']}, from {row['start']}", *[f"{row[k]:.3f}" for k in keys])
    Console().print(table)
    print(f"wrote {path}")


#: ``--lfw``: the face recipe on the names of a tenth of the training people (alone; or with the other
#: people's photos unnamed, each its own class: mixed data), and on every name at the same budget.
LFW_LABELS: dict[str, dict[str, Any]] = {
    "10% of people": {"class_share": 0.1, "starts": ("scratch", "self-supervised")},
    "10% of people + the rest unnamed": {"class_share": 0.1, "rest_unlabelled": True, "starts": ("self-supervised",)},
    "every person": {"starts": ("scratch",)},
}


def lfw_pairs(model: AnyTwin, pairs: Path) -> dict[str, Any]:
    """10-fold pairs accuracy (each fold's threshold from the other nine) on the test people."""
    from twinnet.evaluate import evaluate_model

    r = evaluate_model(model, pairs, "pairs", {"folds": 10}).to_dict()
    return {k: round(float(r[k]), 4) for k in ("accuracy", "accuracy_std", "roc_auc", "tar@far=0.001")}


def lfw(args: argparse.Namespace, started: float) -> None:
    """``--lfw``: configs/selfsup-faces.yaml on the training people of ``bench/faces.py``'s split
    with their names dropped; 10-fold pairs accuracy on the test people (never trained on) against
    eigenfaces and the untrained encoder (this run) and the supervised face recipe (``faces.json``);
    then the face recipe on a tenth of the people's names, from scratch and from this model."""
    import faces as faces_bench

    data = faces_bench.prepare(args.out / "lfw")
    pairs = Path(data["pairs"])
    supervised_cfg = REPO / "configs" / "faces.yaml"
    rows: dict[str, dict[str, Any]] = {}
    eigen = faces_bench.eigenfaces(data, pairs)
    read_out = ("accuracy", "accuracy_std", "roc_auc", "tar@far=0.001")
    rows["eigenfaces (PCA, this run)"] = {k: round(float(eigen["eigenfaces"][k]), 4) for k in read_out}
    ssl_cfg = load_config(args.lfw_config, [f"data.path={data['folders']['train']}",
                                            f"train.max_minutes={args.lfw_minutes}", *args.lfw_override])  # fmt: skip
    seed_everything(ssl_cfg.train.seed)
    rows["encoder untrained"] = lfw_pairs(build_model(ssl_cfg.model), pairs)
    if args.ssl_model is None:
        console.print("[bold]faces without identities[/]")
        ssl_dir, ssl_minutes, ssl_epochs = train_timed(ssl_cfg, args.out / "lfw-ssl")
    else:  # a model this mode trained before: its run's log says how long
        ssl_dir = args.ssl_model
        records = [json.loads(line) for line in (ssl_dir.parent / "metrics.jsonl").read_text().splitlines() if line]
        ssl_minutes, ssl_epochs = sum(r["seconds"] for r in records) / 60, len(records)
    ssl = {**lfw_pairs(load(ssl_dir), pairs), "train_minutes": round(ssl_minutes, 2), "epochs": ssl_epochs}
    rows["twinnet self-supervised (no identities)"] = ssl
    curve = []
    for name, share in LFW_LABELS.items():
        # an epoch is as many photos as every training person has, so each setting takes the recipe's
        # steps and schedule (a tenth of the people alone would otherwise stop after 150 steps)
        ft_cfg = load_config(supervised_cfg, [f"data.path={data['folders']['train']}",
                                              f"data.val_path={data['folders']['val']}",
                                              f"train.samples_per_epoch={data['counts']['train']['images']}",
                                              f"train.max_minutes={args.lfw_finetune_minutes}"])  # fmt: skip
        for start in share["starts"]:
            init = ssl_dir if start == "self-supervised" else None
            console.print(f"[bold]{name}, from {start}[/]")
            folder = "-".join(name.replace("%", "").replace("+", "").split()[:4])
            model_dir, minutes = finetune(ft_cfg, share, init, args.out / f"lfw-{folder}-{start}")
            curve.append({"labels": name, "start": start, **lfw_pairs(load(model_dir), pairs),
                          "train_minutes": round(minutes, 2)})  # fmt: skip
    faces_json = json.loads((RESULTS / "faces.json").read_text())
    supervised = {"accuracy": round(faces_json["lfw_pairs_accuracy"], 4), "train_minutes": faces_json["train_minutes"],
                  "source": "bench/results/faces.json (configs/faces.yaml on every training person's name; "
                            "the same split and pairs)"}  # fmt: skip
    eigen_accuracy = rows["eigenfaces (PCA, this run)"]["accuracy"]
    best_tenth = max(r["accuracy"] for r in curve if r["labels"].startswith("10%"))
    every = next(r for r in curve if r["labels"] == "every person")
    result = {
        "lfw": {
            "pairs_accuracy": ssl["accuracy"],
            "eigenfaces_pairs_accuracy": eigen_accuracy,
            "points_over_eigenfaces": round(100 * (ssl["accuracy"] - eigen_accuracy), 2),
            "supervised_pairs_accuracy": supervised["accuracy"],
            "supervised_same_budget_pairs_accuracy": every["accuracy"],
            "tenth_of_people_best_pairs_accuracy": best_tenth,
            "tenth_of_people_points_below_supervised": round(100 * (supervised["accuracy"] - best_tenth), 2),
            "tenth_of_people_points_below_supervised_same_budget": round(100 * (every["accuracy"] - best_tenth), 2),
            "rows": rows,
            "supervised": supervised,
            "label_efficiency": curve,
            "split": data["counts"],
        },
        "train_minutes": round(ssl_minutes, 2),
        "budget_minutes": args.lfw_minutes,
        "finetune_budget_minutes": args.lfw_finetune_minutes,
        "overrides": args.lfw_override,
        "self_supervised_model": str(ssl_dir),
        "configs": {
            "self_supervised": str(args.lfw_config.relative_to(REPO)),
            "supervised": str(supervised_cfg.relative_to(REPO)),
        },
    }
    path = write_result("selfsup_lfw", result, started)
    table = Table(title="LFW pairs, 10 folds, test people never trained on")
    for column in ("system", "accuracy", "ROC AUC", "train min"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(name, f"{row['accuracy']:.3f}", f"{row['roc_auc']:.3f}", str(row.get("train_minutes", "")))
    for row in curve:
        table.add_row(f"{row['labels']}, from {row['start']}", f"{row['accuracy']:.3f}", f"{row['roc_auc']:.3f}",
                      str(row["train_minutes"]))  # fmt: skip
    table.add_row("supervised, every name (faces.json)", f"{supervised['accuracy']:.3f}", "",
                  str(supervised["train_minutes"]))  # fmt: skip
    Console().print(table)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each full run")
    parser.add_argument("--finetune-minutes", type=float, default=2.0, help="budget of each label-efficiency run")
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-selfsup")
    parser.add_argument("--ssl-config", type=Path, default=REPO / "configs" / "selfsup-omniglot.yaml")
    parser.add_argument("--supervised-config", type=Path, default=REPO / "configs" / "omniglot.yaml")
    parser.add_argument("--skip-label-efficiency", action="store_true")
    parser.add_argument(
        "--digits-only",
        action="store_true",
        help="only the objectives on the quickstart digits (bench/results/selfsup_digits.json)",
    )
    parser.add_argument("--text", action="store_true",
                        help="only MiniLM adapted without labels (bench/results/selfsup_text.json)")  # fmt: skip
    parser.add_argument("--text-minutes", type=float, default=11.0, help="training budget of the --text run")
    parser.add_argument("--text-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the --text run (repeatable), e.g. train.lr=1e-5")  # fmt: skip
    parser.add_argument("--one-label", action="store_true",
                        help="only the label-efficiency runs on one labelled drawing per character, from scratch "
                             "and from a self-supervised model trained here or given by --ssl-model "
                             "(bench/results/selfsup_one_label.json)")  # fmt: skip
    parser.add_argument(
        "--ssl-model", type=Path, default=None, help="--one-label, --lfw: a self-supervised model to start from"
    )
    parser.add_argument("--lfw", action="store_true",
                        help="only faces without identities on LFW (bench/results/selfsup_lfw.json)")  # fmt: skip
    parser.add_argument("--lfw-config", type=Path, default=REPO / "configs" / "selfsup-faces.yaml")
    parser.add_argument("--lfw-minutes", type=float, default=25.0, help="budget of the --lfw run without identities")
    parser.add_argument("--lfw-finetune-minutes", type=float, default=10.0,
                        help="budget of each --lfw run on a tenth of the names")  # fmt: skip
    parser.add_argument("--lfw-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the --lfw run without identities (repeatable)")  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.lfw:
        lfw(args, started)
        return
    if args.one_label:
        one_label(args, started)
        return
    if args.text:
        figures = text_runs(text_adaptation(args.text_minutes, args.out / "text", args.text_override))
        path = write_result("selfsup_text", figures, started)
        t = (figures["variants"][", ".join(args.text_override)] if args.text_override else figures)["text"]
        table = Table(title=f"all-MiniLM-L6-v2 adapted without labels ({figures['train_minutes']:.1f} min)")
        for column in ("model", "STS-B dev Spearman", "MRPC accuracy / F1"):
            table.add_column(column)
        for name in ("shipped", "adapted"):
            mrpc = t["mrpc"][name]
            table.add_row(name, f"{t[f'stsb_dev_spearman_{name}']:.4f}", f"{mrpc['accuracy']:.3f} / {mrpc['f1']:.3f}")
        Console().print(table)
        print(f"delta {t['delta']:+.4f} (saved epoch {t['saved_epoch']}); wrote {path}")
        return
    if args.digits_only:
        figures = digits()
        path = write_result("selfsup_digits", figures, started)
        table = Table(title="digits 6-9 never trained on (0-5 trained without labels), mean of 3 seeds")
        for column in ("objective", "ROC AUC", "4-way 1-shot", "min AUC"):
            table.add_column(column)
        for name, row in figures["rows"].items():
            table.add_row(
                name, f"{row['roc_auc_mean']:.3f}", f"{row['oneshot_4way_mean']:.3f}", f"{min(row['roc_auc']):.3f}"
            )
        Console().print(table)
        print(f"wrote {path}")
        return
    ssl_cfg = omniglot_config(args.ssl_config, args.minutes)
    items = read_items(data_dir() / "images_evaluation.zip", ssl_cfg.model.input, class_depth=2)

    rows: dict[str, dict[str, Any]] = {}
    rows["raw pixels"] = evaluate(TwinNetwork(_Pixels(), EuclideanDistance()), items, args.episodes)
    seed_everything(0)
    rows["encoder untrained"] = evaluate(build_model(ssl_cfg.model), items, args.episodes)
    console.print("[bold]self-supervised[/]")
    ssl_dir, ssl_minutes, ssl_epochs = train_timed(ssl_cfg, args.out / "ssl")
    ssl_row = evaluate(load(ssl_dir), items, args.episodes)
    rows["twinnet self-supervised (no labels)"] = {**ssl_row, "train_minutes": round(ssl_minutes, 2),
                                                   "epochs": ssl_epochs}  # fmt: skip
    console.print("[bold]supervised[/]")
    sup_cfg = omniglot_config(args.supervised_config, args.minutes)
    sup_dir, sup_minutes, sup_epochs = train_timed(sup_cfg, args.out / "supervised")
    sup_row = evaluate(load(sup_dir), items, args.episodes)
    rows["twinnet supervised (all labels)"] = {**sup_row, "train_minutes": round(sup_minutes, 2),
                                               "epochs": sup_epochs}  # fmt: skip

    curve = [] if args.skip_label_efficiency else label_curve(LABEL_SETTINGS, args, ssl_dir, items)

    ssl, sup = rows["twinnet self-supervised (no labels)"], rows["twinnet supervised (all labels)"]
    result = {
        "omniglot": {
            "random_5way_1shot": ssl["random_5way_1shot"],
            "random_20way_1shot": ssl["random_20way_1shot"],
            "within_alphabet_20way_1shot": ssl["within_alphabet_20way_1shot"],
            "supervised_random_20way_1shot": sup["random_20way_1shot"],
            "ratio_to_supervised_random_20way": round(ssl["random_20way_1shot"] / sup["random_20way_1shot"], 3),
            "rows": rows,
            "episodes": args.episodes,
            "published_unsupervised": {
                "UMTRA 5-way 1-shot": 0.838,
                "CACTUs-ProtoNets 5-way 1-shot": 0.6862,
                "CACTUs-MAML 20-way 1-shot": 0.4851,
            },
        },
        "label_efficiency": curve,
        "train_minutes": round(ssl_minutes, 2),
        "budget_minutes": args.minutes,
        "finetune_budget_minutes": args.finetune_minutes,
        "configs": {
            "self_supervised": str(args.ssl_config.relative_to(REPO)),
            "supervised": str(args.supervised_config.relative_to(REPO)),
        },
        "not_measured": ["quickstart digits", "text (MiniLM without labels)"],
        "measured_elsewhere": {"lfw": "python bench/selfsup.py --lfw → bench/results/selfsup_lfw.json"},
    }
    path = write_result("selfsup", result, started)
    table = Table(title=f"Omniglot evaluation alphabets, {args.episodes} episodes")
    keys = [
        "random_5way_1shot",
        "random_20way_1shot",
        "within_alphabet_20way_1shot",
        "knn_1nn_accuracy_all_659_characters",
    ]
    table.add_column("system")
    for k in keys:
        table.add_column(k)
    for name, row in rows.items():
        table.add_row(name, *[f"{row[k]:.3f}" for k in keys])
    for row in curve:
        table.add_row(f"{row['labels']}, from {row['start']}", *[f"{row[k]:.3f}" for k in keys])
    Console().print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
