"""Fingerprints: configs/fingerprints.yaml on fingers never trained on, against NIST NBIS
(MINDTCT + Bozorth3) on exactly the same trials.

    python bench/fingerprints.py               # train (≤ train.max_minutes), evaluate;
                                               # writes bench/results/fingerprints.json
    python bench/fingerprints.py --run RUN     # evaluate the model of a finished run (RUN/model) instead of training

The split (``$TWINNET_DATA/fingerprints``, 75 fingers × 4 impressions, three optical sensors):

- **train**: FVC2002 DB1_B (Identix, 10 fingers, the whole database) and Neurotechnology U.are.U
  persons s012, s013, s017 (30 fingers);
- **dev** (early stopping, calibration, the fusion fit): U.are.U person s022 (10 fingers);
- **test**: FVC2002 DB2_B (Biometrika, 10 fingers: a sensor never trained on) and U.are.U persons
  s027 and s057 (15 fingers: the trained sensor, other people).

Every person and every FVC database is on one side only. Measured on the test fingers with the FVC
protocol (both impostor variants), pooled and per sensor: the twin's global embedding (cosine), its
local descriptors matched part by part (:mod:`twinnet.fingerprints.local`), Bozorth3, and fusions of
the twin and Bozorth3 fitted on the dev trials. Then 1:N identification through a gallery: the
test fingers enrolled with their first impression, their other impressions as queries, rank-1 for
the twin and for Bozorth3 (N comparisons per query); the gallery is then filled with synthetic
distractors (drawn from a Gaussian fitted to the training embeddings) to 100,000 templates and a
query's search time measured, against Bozorth3's time per comparison × N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
TRAIN_PEOPLE = ("neurotech_s012", "neurotech_s013", "neurotech_s017")
DEV_PEOPLE = ("neurotech_s022",)
TEST_PEOPLE = ("neurotech_s027", "neurotech_s057")
UNSEEN_SENSOR = "fvc2002_db2b"


def split(items: Any) -> dict[str, np.ndarray]:
    """Item indices of train, dev and test (by database and person)."""
    from twinnet.data.fingerprints import scan

    person = {str(i.path): i.person for i in scan(fingerprint_root())}
    db = np.asarray(items.attributes["database"]).astype(str)
    who = np.array([person[n] or "" for n in items.names])
    train = (db == "fvc2002_db1b") | np.isin(who, TRAIN_PEOPLE)
    dev = np.isin(who, DEV_PEOPLE)
    test = (db == UNSEEN_SENSOR) | np.isin(who, TEST_PEOPLE)
    return {k: np.flatnonzero(v) for k, v in (("train", train), ("dev", dev), ("test", test))}


def fingerprint_root() -> Path:
    from twinnet.runtime import data_root

    return data_root() / "fingerprints"


def r4(x: float) -> float:
    return round(float(x), 4)


def figures_of(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("eer", "fmr100", "fmr1000", "zerofmr", "genuine", "impostors")
    out = {k: r4(report[k]) if isinstance(report[k], float) else report[k] for k in keep}
    out["per_sensor"] = {db: {k: r4(v[k]) if isinstance(v[k], float) else v[k] for k in keep}
                         for db, v in report["per_database"].items()}  # fmt: skip
    return out


def train(config: Any, items: Any, parts: dict[str, np.ndarray], run_dir: Path) -> tuple[Any, float, dict[str, Any]]:
    import twinnet
    from twinnet.data.sources import Dataset
    from twinnet.runtime import seed_everything
    from twinnet.train import build_loss

    seed_everything(config.train.seed)
    model = twinnet.build_model(config.model)
    trainer = twinnet.Trainer.from_datasets(
        model, build_loss(config), Dataset(items.subset(parts["train"]), source="train"), config.train,
        val=Dataset(items.subset(parts["dev"]), source="dev"), augment=config.data.augment, run_dir=run_dir,
        run_config=config,
    )  # fmt: skip
    result = trainer.fit()
    info = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "dev_eer_best": r4(result.best_metric) if result.best_metric is not None else None}  # fmt: skip
    return result.model, result.train_seconds / 60.0, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="evaluate RUN/model instead of training")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-fingerprints")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fingerprints.yaml")
    parser.add_argument("--distractors", type=int, default=100_000, help="gallery size for the search time")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_minutes=5")
    args = parser.parse_args()
    started = time.perf_counter()

    import twinnet
    from twinnet.config import load_config
    from twinnet.data.fingerprints import read_fingerprints
    from twinnet.fingerprints.bozorth import Bozorth3
    from twinnet.fingerprints.fusion import ScoreFusion
    from twinnet.fingerprints.local import local_templates
    from twinnet.fingerprints.local import score_pairs as local_scores
    from twinnet.protocols.fvc import fvc_pairs, fvc_report, item_fields
    from twinnet.protocols.verification import pair_values

    config = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    items = read_fingerprints(fingerprint_root(), config.model.input)
    read_seconds = time.perf_counter() - t0
    parts = split(items)
    print(
        f"{len(items)} impressions read and preprocessed in {read_seconds:.1f} s; "
        + ", ".join(f"{k} {len(np.unique(items.labels[v]))} fingers" for k, v in parts.items()),
        file=sys.stderr,
    )

    t0 = time.perf_counter()
    nbis = Bozorth3()
    templates = nbis.templates(items.names, items.attributes["dpi"].tolist())
    extract_ms = (time.perf_counter() - t0) / len(items) * 1000

    if args.run is None:
        model, train_minutes, train_info = train(config, items, parts, args.out)
    else:
        model = twinnet.load(args.run / "model")
        train_minutes, train_info = None, {"evaluated": str(args.run)}
    model.eval()
    torch.set_num_threads(config.train.threads or torch.get_num_threads())

    local = local_templates(model, items)
    orientation = model.comparator.orientation

    def scores_on(subset: np.ndarray, impostors: str) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
        sub = items.subset(subset)
        labels, impressions, databases = item_fields(sub)
        pairs = fvc_pairs(labels, impressions, databases, impostors)  # type: ignore[arg-type]
        a, b = subset[pairs.a], subset[pairs.b]
        s = {"twinnet": orientation.to_similarity(pair_values(model, sub, pairs)),
             "twinnet_local": local_scores(local, a, b),
             "bozorth3": np.array([nbis.compare(templates[i], templates[j]) for i, j in zip(a, b)], float)}  # fmt: skip
        return pairs, s, databases

    # fusions fitted on the dev fingers' trials (never on the test fingers)
    dev_pairs, dev_scores, _ = scores_on(parts["dev"], "all")
    fusions = {
        "fused": ScoreFusion.fit({k: dev_scores[k] for k in ("twinnet", "bozorth3")}, dev_pairs.same, "logistic"),
        "fused_sum": ScoreFusion.fit({k: dev_scores[k] for k in ("twinnet", "bozorth3")}, dev_pairs.same, "sum"),
        "fused_local": ScoreFusion.fit(dev_scores, dev_pairs.same, "logistic"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    fusions["fused"].save(args.out / "fusion.json")

    protocols: dict[str, Any] = {}
    for impostors in ("all", "fvc"):
        pairs, s, databases = scores_on(parts["test"], impostors)
        for name, fusion in fusions.items():
            s[name] = fusion.combine(s)
        protocols[impostors] = {name: figures_of(fvc_report(v, pairs, databases)) for name, v in s.items()}
    main_ = protocols["all"]

    # -- 1:N identification -----------------------------------------------------------------------
    from twinnet.embedding import embed_batches
    from twinnet.gallery import Gallery

    test = parts["test"]
    impressions = items.attributes["impression"]
    enrolled = np.array(
        [i for i in test if impressions[i] == min(impressions[test][items.labels[test] == items.labels[i]])]
    )
    queries = np.array([i for i in test if i not in set(enrolled.tolist())])
    names = items.class_names
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery.create(Path(tmp) / "gallery", model, index="flat")
        emb = embed_batches(model, items).numpy()
        gallery.enroll_many([names[items.labels[i]] for i in enrolled], emb[enrolled])
        found = gallery.identify_batch(emb[queries], k=1, precomputed=True)
        twin_rank1 = float(np.mean([f.matches[0].identity == names[items.labels[q]] for f, q in zip(found, queries)]))
        # synthetic distractors: a Gaussian fitted to the training fingers' embeddings, normalised
        train_emb = emb[parts["train"]]
        rng = np.random.default_rng(0)
        cov = np.cov(train_emb.T) + 1e-4 * np.eye(train_emb.shape[1])
        n_fill = max(0, args.distractors - len(enrolled))
        fill = rng.multivariate_normal(train_emb.mean(0), cov, n_fill).astype(np.float32)
        fill /= np.linalg.norm(fill, axis=1, keepdims=True)
        for start in range(0, n_fill, 20_000):
            chunk = fill[start : start + 20_000]
            gallery.enroll_many([f"distractor{start + k:06d}" for k in range(len(chunk))], chunk)
        gallery.identify_batch(emb[queries[:2]], k=1, precomputed=True)  # the index is built and warm
        times = []
        for q in queries:
            t0 = time.perf_counter()
            hit = gallery.identify_batch(emb[q : q + 1], k=1, precomputed=True)
            times.append(time.perf_counter() - t0)
        big = gallery.identify_batch(emb[queries], k=1, precomputed=True)
        rank1_big = float(np.mean([f.matches[0].identity == names[items.labels[q]] for f, q in zip(big, queries)]))
        size_big = gallery.count()
        gallery.close()
        del hit
    boz = np.array([[nbis.compare(templates[q], templates[e]) for e in enrolled] for q in queries])
    boz_rank1 = float(np.mean(items.labels[enrolled[boz.argmax(1)]] == items.labels[queries]))
    ms_cmp = nbis.ms_per_comparison([templates[i] for i in test])
    search_ms = float(np.median(times) * 1000)

    same_sensor = {k: main_[k]["per_sensor"].get("neurotech_uareu", {}).get("eer") for k in main_}
    unseen = {k: main_[k]["per_sensor"].get(UNSEEN_SENSOR, {}).get("eer") for k in main_}
    better = min(main_["twinnet"]["eer"], main_["bozorth3"]["eer"])
    figures: dict[str, Any] = {
        "note": args.note or "shared 2-core machine: other engineers' tests and benchmarks ran at the same time",
        "split": {
            "train": "fvc2002_db1b + neurotech " + ", ".join(TRAIN_PEOPLE),
            "dev": ", ".join(DEV_PEOPLE),
            "test": f"{UNSEEN_SENSOR} + neurotech " + ", ".join(TEST_PEOPLE),
            "fingers": {k: len(np.unique(items.labels[v])) for k, v in parts.items()},
        },
        "twinnet.eer": main_["twinnet"]["eer"],
        "twinnet.fmr100": main_["twinnet"]["fmr100"],
        "twinnet.fmr1000": main_["twinnet"]["fmr1000"],
        "twinnet.zerofmr": main_["twinnet"]["zerofmr"],
        "twinnet_local.eer": main_["twinnet_local"]["eer"],
        "bozorth3.eer": main_["bozorth3"]["eer"],
        "bozorth3.fmr100": main_["bozorth3"]["fmr100"],
        "fused.eer": main_["fused"]["eer"],
        "fused_sum.eer": main_["fused_sum"]["eer"],
        "fused_local.eer": main_["fused_local"]["eer"],
        "fused_ratio_to_better": r4(main_["fused"]["eer"] / better) if better > 0 else None,
        "cross_sensor.sensor": UNSEEN_SENSOR,
        "cross_sensor.twinnet.eer": unseen["twinnet"],
        "cross_sensor.bozorth3.eer": unseen["bozorth3"],
        "cross_sensor.twinnet_local.eer": unseen["twinnet_local"],
        "cross_sensor.fused.eer": unseen["fused"],
        "same_sensor.twinnet.eer": same_sensor["twinnet"],
        "same_sensor.bozorth3.eer": same_sensor["bozorth3"],
        "twinnet.rank1": r4(twin_rank1),
        "bozorth3.rank1": r4(boz_rank1),
        "twinnet.rank1_100k": r4(rank1_big),
        "gallery_templates": int(size_big.get("templates", 0)),
        "identification": {"enrolled": len(enrolled), "queries": len(queries)},
        "search_ms_100k": r4(search_ms),
        "search_ms_100k_p90": r4(float(np.percentile(times, 90) * 1000)),
        "bozorth3_ms_per_comparison": r4(ms_cmp),
        "bozorth3_ms_100k_extrapolated": r4(ms_cmp * args.distractors),
        "bozorth3_extract_ms_per_image": r4(extract_ms),
        "train_minutes": None if train_minutes is None else round(train_minutes, 2),
        "training": train_info,
        "read_seconds": round(read_seconds, 1),
        "fusion": {k: v.to_dict() for k, v in fusions.items()},
        "protocols": protocols,
    }
    path = write_result("fingerprints", figures, started)
    rows = [("", "EER all-pairs", "FMR100", "ZeroFMR", "EER FVC", f"EER {UNSEEN_SENSOR}", "EER U.are.U")]
    for k in ("twinnet", "twinnet_local", "bozorth3", "fused", "fused_sum", "fused_local"):
        m, f = main_[k], protocols["fvc"][k]
        rows.append((k, f"{m['eer']:.4f}", f"{m['fmr100']:.4f}", f"{m['zerofmr']:.4f}", f"{f['eer']:.4f}",
                     f"{unseen[k]}", f"{same_sensor[k]}"))  # fmt: skip
    for r in rows:
        print(" | ".join(f"{c:>14}" for c in r))
    print(f"rank-1: twinnet {twin_rank1:.3f} (at {size_big.get('templates')} templates {rank1_big:.3f}), "
          f"bozorth3 {boz_rank1:.3f}; search {search_ms:.2f} ms/query at 100k; bozorth3 {ms_cmp:.3f} ms/comparison "
          f"→ {ms_cmp * args.distractors / 1000:.1f} s per 100k query")  # fmt: skip
    print(json.dumps({"train_minutes": figures["train_minutes"], **train_info}), "→", path)


if __name__ == "__main__":
    main()
