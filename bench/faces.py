"""Faces: configs/faces.yaml on LFW split by person, measured on people never trained on.

    python bench/faces.py                 # split, train (≤ 55 min), evaluate; writes bench/results/faces.json
    python bench/faces.py --run RUN       # evaluate a finished run of the same split instead of training

What it does (every step seeded):

1. Splits ``$TWINNET_DATA/lfw/people`` by person: 25% of the people with two or more images are
   **test** people (never trained on), 5% **validation** people (early stopping and calibration), the
   rest (with every one-image person) **training** people. The folders are links under ``--work``.
2. Writes the test people's pairs as an LFW ``pairs.txt`` beside their folders (header ``10 150``; 10 folds of 150 same
   ``name n1 n2`` and 150 different ``name1 n1 name2 n2`` lines, each fold its own people) and
   trains ``configs/faces.yaml`` with ``twinnet train`` on the training folder.
3. ``twinnet evaluate RUN/model --protocol pairs --data pairs.txt --folds 10`` (threshold of each fold
   from the other nine); eigenfaces (PCA on the training people, cosine) on the same pairs and folds.
4. Open-set identification through a gallery: half of the test people enrolled with one image each;
   queries are their other images and every image of the other half (never enrolled): DIR at FAR
   1% and 10%, rank-1.
5. The small folder: 10 LFW people with 30 or more images, 30 images each (300), trained with
   ``configs/image-folder.yaml`` unchanged: minutes to the best validation epoch, and in all; and
   the trainer's model share with ``configs/faces.yaml`` at 112 px on the same folder.

Timings are upper bounds when other work shares the CPU (``--note`` records what else ran).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def lfw_root() -> Path:
    from twinnet.runtime import data_root

    return data_root() / "lfw" / "people"


def people(root: Path) -> dict[str, list[str]]:
    return {p.name: sorted(f.name for f in p.iterdir() if f.suffix.lower() == ".jpg")
            for p in sorted(root.iterdir()) if p.is_dir()}  # fmt: skip


def split_people(everyone: dict[str, list[str]], seed: int = SEED) -> dict[str, list[str]]:
    """Test (25%) and validation (5%) people among those with ≥ 2 images; training: the rest."""
    rng = np.random.default_rng([seed, 32])
    multi = [p for p, files in everyone.items() if len(files) >= 2]
    order = [multi[i] for i in rng.permutation(len(multi))]
    n_test, n_val = round(0.25 * len(multi)), round(0.05 * len(multi))
    test, val = sorted(order[:n_test]), sorted(order[n_test : n_test + n_val])
    held = set(test) | set(val)
    return {"test": test, "val": val, "train": sorted(p for p in everyone if p not in held)}


def link_folder(root: Path, names: list[str], target: Path, images: dict[str, list[str]] | None = None) -> Path:
    """``target/<person>/<image>`` links to ``root/<person>/<image>`` (the data are never copied;
    folders are real, since a folder scan does not descend into linked folders): every image of each
    person, or the file names ``images[person]``."""
    for name in names:
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        files = (root / name).iterdir() if images is None else (root / name / f for f in images[name])
        for image in files:
            link = folder / image.name
            if not link.exists():
                link.symlink_to(image)
    return target


def draw_images(everyone: dict[str, list[str]], people: list[str], per_person: int,
                rng: np.random.Generator) -> dict[str, list[str]]:  # fmt: skip
    """``per_person`` file names of each of ``people``, drawn without replacement."""
    return {p: sorted(rng.choice(everyone[p], per_person, replace=False).tolist()) for p in people}


def number(file_name: str) -> int:
    return int(Path(file_name).stem.rsplit("_", 1)[1])


def write_lfw_pairs(everyone: dict[str, list[str]], test: list[str], path: Path, folds: int = 10,
                    per_fold: int = 150, seed: int = SEED) -> Path:  # fmt: skip
    """An LFW View-2-style ``pairs.txt`` of the ``test`` people: ``folds`` sets, each of its own
    people, with ``per_fold`` same pairs then ``per_fold`` different pairs."""
    rng = np.random.default_rng([seed, 33])
    order = [test[i] for i in rng.permutation(len(test))]
    groups = [order[k::folds] for k in range(folds)]
    lines = [f"{folds}\t{per_fold}"]
    for group in groups:
        same: set[tuple[str, int, int]] = set()
        while len(same) < per_fold:
            person = group[rng.integers(len(group))]
            files = everyone[person]
            i, j = sorted(rng.choice(len(files), 2, replace=False).tolist())
            same.add((person, number(files[i]), number(files[j])))
        diff: set[tuple[str, int, str, int]] = set()
        while len(diff) < per_fold:
            a, b = sorted(rng.choice(len(group), 2, replace=False).tolist())
            pa, pb = group[a], group[b]
            diff.add((pa, number(rng.choice(everyone[pa])), pb, number(rng.choice(everyone[pb]))))
        lines += [f"{p}\t{i}\t{j}" for p, i, j in sorted(same)]
        lines += [f"{p}\t{i}\t{q}\t{j}" for p, i, q, j in sorted(diff)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare(work: Path) -> dict[str, Any]:
    root = lfw_root()
    everyone = people(root)
    split = split_people(everyone)
    folders = {name: link_folder(root, split[name], work / name) for name in ("train", "val", "test")}
    pairs = write_lfw_pairs(everyone, split["test"], work / "test" / "pairs.txt")  # beside the person folders
    counts = {name: {"people": len(split[name]), "images": sum(len(everyone[p]) for p in split[name])}
              for name in split}  # fmt: skip
    return {"everyone": everyone, "split": split, "folders": folders, "pairs": pairs, "counts": counts}


def twinnet(*args: str, log: Path | None = None) -> str:
    """Run the CLI as a user would; returns its standard output."""
    cmd = [sys.executable, "-m", "twinnet", *args]
    with open(log, "a") if log else open(os.devnull, "w") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {done.returncode} (see {log})")
    return done.stdout


def train(config: str, data: Path, out: Path, overrides: list[str], log: Path) -> None:
    twinnet("train", "--config", config, "--data", str(data), "--out", str(out), *overrides, log=log)


def run_minutes(run: Path) -> dict[str, Any]:
    """Training minutes in all and to the best validation epoch, from the run's metrics log."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(r["best_epoch"] for r in records)
    seconds = np.cumsum([r["seconds"] for r in records])
    return {"epochs": len(records), "best_epoch": best, "train_minutes": round(float(seconds[-1]) / 60, 2),
            "minutes_to_best": round(float(seconds[best - 1]) / 60, 2) if best else None,
            "items_per_s": round(float(np.mean([r["items_per_s"] for r in records])), 1),
            "model_share": round(float(np.mean([r["model_share"] for r in records])), 3)}  # fmt: skip


def eigenfaces(data: dict[str, Any], pairs_path: Path, n_train: int = 3000, components: int = 100) -> dict[str, Any]:
    """Eigenfaces (Turk & Pentland 1991) in the same run: PCA (whitened) fitted on grey 64×64 face
    crops of ``n_train`` training people's images; cosine of the projections; the same folds."""
    from sklearn.decomposition import PCA

    from twinnet.compare import CosineSimilarity
    from twinnet.config import InputSpec
    from twinnet.data.items import load_images, scan_image_folder
    from twinnet.data.pairs import read_pairs_file
    from twinnet.protocols.folds import fold_ids, kfold_verification

    spec = InputSpec(kind="image", channels=1, size=(64, 64), face_crop=True, face_margin=0.1)
    paths, _, _, _ = scan_image_folder(data["folders"]["train"])
    rng = np.random.default_rng([SEED, 34])
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), min(n_train, len(paths)), replace=False))]
    train_x, _ = load_images(chosen, spec)
    pca = PCA(n_components=components, whiten=True, random_state=SEED).fit(train_x.flatten(1).float().numpy() / 255)
    pf = read_pairs_file(pairs_path)
    test_x, _ = load_images(pf.paths, spec)
    z = pca.transform(test_x.flatten(1).float().numpy() / 255)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = np.sum(z[pf.pairs.a] * z[pf.pairs.b], axis=1)
    metrics = kfold_verification(sim, pf.pairs.same, fold_ids(pf.pairs, 10), CosineSimilarity().orientation)
    return {"eigenfaces_pairs_accuracy": metrics["accuracy"], "eigenfaces_pairs_accuracy_std": metrics["accuracy_std"],
            "eigenfaces_roc_auc": metrics["roc_auc"], "eigenfaces": {"components": components, "whiten": True,
            "fit_images": len(chosen), "input": "grey 64x64 face crops", **metrics}}  # fmt: skip


def evaluate(run: Path, data: dict[str, Any], work: Path, log: Path) -> dict[str, Any]:
    model = run / "model"
    pairs = json.loads(twinnet("evaluate", str(model), "--protocol", "pairs", "--data", str(data["pairs"]),
                               "--folds", "10", "--json", log=log))  # fmt: skip
    openset = json.loads(twinnet("evaluate", str(model), "--protocol", "openset", "--data",
                                 str(data["folders"]["test"]), "--json", log=log))  # fmt: skip
    out: dict[str, Any] = {
        "lfw_pairs_accuracy": pairs["accuracy"], "lfw_pairs_accuracy_std": pairs["accuracy_std"],
        "lfw_pairs_accuracy_sem": pairs["accuracy_sem"], "lfw_pairs_roc_auc": pairs["roc_auc"],
        "lfw_pairs_tar_at_far_1e-3": pairs["tar@far=0.001"], "lfw_pairs": pairs,
        "dir_at_far_1pct": openset["dir@far=0.01"], "dir_at_far_10pct": openset["dir@far=0.1"],
        "rank1": openset["rank1"], "openset": openset,
    }  # fmt: skip
    out.update(eigenfaces(data, data["pairs"]))
    gap = out["lfw_pairs_accuracy"] - out["eigenfaces_pairs_accuracy"]
    out["twinnet_minus_eigenfaces_points"] = round(100 * gap, 2)
    minutes = run_minutes(run)
    out.update({"train_minutes": minutes["train_minutes"], "train": minutes})
    return out


def small_folder(data: dict[str, Any], work: Path, log: Path) -> dict[str, Any]:
    """10 LFW people with ≥ 30 images, 30 each (300 images), ``configs/image-folder.yaml`` unchanged."""
    everyone = data["everyone"]
    many = sorted(p for p, files in everyone.items() if len(files) >= 30)
    rng = np.random.default_rng([SEED, 35])
    chosen = sorted(rng.choice(many, 10, replace=False).tolist())
    folder = link_folder(lfw_root(), chosen, work / "small", draw_images(everyone, chosen, 30, rng))
    run = work / "small-run"
    started = time.perf_counter()
    train("configs/image-folder.yaml", folder, run, [], log)
    wall = time.perf_counter() - started
    minutes = run_minutes(run)
    metrics_file = run / "model" / "metrics.json"
    final = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {"small_folder_train_minutes": minutes["minutes_to_best"],
            "small_folder_total_train_minutes": minutes["train_minutes"],
            "small_folder_wall_minutes": round(wall / 60, 2),
            "small_folder": {"people": chosen, "images": 300, **minutes,
                             "validation": final.get("validation")}}  # fmt: skip


def speed_at_112(work: Path, log: Path) -> dict[str, Any]:
    """The trainer's model share (time in the model step, not waiting for batches) at 112 px:
    configs/faces.yaml on the small folder for 2 epochs (images decoded once, held in memory)."""
    run = work / "speed-112"
    train("configs/faces.yaml", work / "small", run, ["model.input.size=[112,112]", "train.epochs=2",
          "data.val_classes=0.2", "train.warmup_steps=0"], log)  # fmt: skip
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"model_share_at_112px": round(min(r["model_share"] for r in records), 3),
            "items_per_s_at_112px": round(float(np.mean([r["items_per_s"] for r in records])), 1)}  # fmt: skip


def thousand_folder(data: dict[str, Any], work: Path, log: Path) -> dict[str, Any]:
    """The LFW people with ≥ 20 images (47 in this copy; at most 50), 20 each (940 images),
    ``configs/image-folder.yaml`` unchanged: the issue's second size (target: best validation score
    within 15 minutes)."""
    everyone = data["everyone"]
    many = sorted(p for p, files in everyone.items() if len(files) >= 20)[:50]
    rng = np.random.default_rng([SEED, 36])
    folder = link_folder(lfw_root(), many, work / "thousand", draw_images(everyone, many, 20, rng))
    n_images = sum(1 for _ in folder.rglob("*.jpg"))
    run = work / "thousand-run"
    started = time.perf_counter()
    train("configs/image-folder.yaml", folder, run, [], log)
    minutes = run_minutes(run)
    final = json.loads((run / "model" / "metrics.json").read_text())
    return {"thousand_folder_train_minutes": minutes["minutes_to_best"],
            "thousand_folder_total_train_minutes": minutes["train_minutes"],
            "thousand_folder_wall_minutes": round((time.perf_counter() - started) / 60, 2),
            "thousand_folder": {"people": len(many), "images": n_images, **minutes,
                                "validation": final.get("validation")}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "faces-bench")
    parser.add_argument("--run", type=Path, default=None, help="a finished run of this split (skip training)")
    parser.add_argument("--minutes", type=float, default=55.0, help="train.max_minutes of the main run")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument(
        "--thousand", action="store_true", help="only the 1,000-image folder (writes bench/results/faces_thousand.json)"
    )
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--note", default="", help="what else ran on the machine (timings are then upper bounds)")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work
    data = prepare(work)
    print(json.dumps(data["counts"]))
    if args.prepare_only:
        return
    if args.thousand:
        figures = {"seed": SEED, "note": args.note, **thousand_folder(data, work, work / "log.txt")}
        write_result("faces_thousand", figures, started)
        return
    log = work / "log.txt"
    run = args.run
    if run is None:
        run = work / "run"
        train("configs/faces.yaml", data["folders"]["train"], run,
              [f"data.val_path={data['folders']['val']}", f"train.max_minutes={args.minutes}"], log)  # fmt: skip
    figures: dict[str, Any] = {"split": data["counts"], "seed": SEED, "threads": 2, "note": args.note}
    figures.update(evaluate(run, data, work, log))
    if not args.skip_small:
        figures.update(small_folder(data, work, log))
        figures.update(speed_at_112(work, log))
    write_result("faces", figures, started)


if __name__ == "__main__":
    main()
