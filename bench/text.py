"""Text twins on real data: STS Benchmark and MRPC, with the packaged all-MiniLM-L6-v2.

1. Baseline: STS-B dev Spearman of the pretrained model, by sentence-transformers ``encode`` +
   cosine (the reference) and by twinnet's ``sts`` protocol; they must agree to 3 decimals.
2. Encode speed: sentences/s of twinnet's ``embed_texts`` vs sentence-transformers ``encode`` on
   the 3,000 STS-B dev sentences, same model, same batch size (32), alternating runs, median.
3. Fine-tuning: ``configs/stsb.yaml`` (CoSENT on sts-train; dev only for early stopping and the
   final report): STS-B dev Spearman and minutes.
4. MRPC: msr_paraphrase_train.txt split 80/20 by pair (seeded); ``configs/mrpc.yaml`` on the 80%
   (10% of it held out to choose the epoch and calibrate the threshold); accuracy / F1 on the 20% at
   that threshold, against the untrained model calibrated on the same held-out pairs.
5. From scratch: ``configs/text-small.yaml`` (word GRU) on sts-train, STS-B dev Spearman.

Writes ``bench/results/text.json``.

    python bench/text.py [--parts baseline,small,stsb,mrpc] [--repeats 3]

``--parts`` runs some of the parts and keeps the other parts' figures from the previous
``bench/results/text.json`` (each part records its own command and minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet.calibrate import calibrate
from twinnet.config import load_config
from twinnet.data.text import TextPairs, read_text_pair_file
from twinnet.encoders.text import default_text_model
from twinnet.inference import embed_texts
from twinnet.io import load
from twinnet.metrics import calc_correlations
from twinnet.model import build_model
from twinnet.protocols import evaluate_pairs, evaluate_sts, pair_similarities
from twinnet.runtime import seed_everything
from twinnet.train import train_from_config

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "bench" / "results" / "text.json"
PARTS = ("baseline", "small", "stsb", "mrpc")
console = Console(stderr=True)


def data_dir(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))


def pretrained_model() -> Any:
    cfg = load_config(REPO / "configs" / "stsb.yaml")
    seed_everything(0)
    return build_model(cfg.model).eval()


def baseline_and_speed(dev: TextPairs, repeats: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_text_model()), device="cpu")
    ours = pretrained_model()
    sentences = dev.texts_a + dev.texts_b
    gold = dev.pairs.score
    n = len(dev)

    def st_encode() -> torch.Tensor:
        return reference.encode(sentences, batch_size=32, convert_to_tensor=True)

    # twinnet's model on each runtime: torch, and ONNX Runtime (fp32; int8 = dynamic quantisation,
    # an approximation whose STS-B cost is reported next to its speed). Exported to a temp folder.
    from twinnet.onnx.export import export_onnx

    export_dir = Path(tempfile.mkdtemp())
    export_onnx(ours, export_dir / "fp32")
    export_onnx(ours, export_dir / "int8", quantize="int8")
    runtimes = {"torch": ours, "onnx_fp32": load(export_dir / "fp32", runtime="onnx"),
                "onnx_int8": load(export_dir / "int8", runtime="onnx")}  # fmt: skip

    def encoder_of(model: Any) -> Any:
        def encode() -> torch.Tensor:
            with torch.inference_mode():
                return embed_texts(model, sentences, batch_size=32)

        return encode

    encoders = {"sentence_transformers": st_encode, **{name: encoder_of(m) for name, m in runtimes.items()}}
    for fn in encoders.values():
        fn()  # warm-up: first calls allocate and load kernels
    times: dict[str, list[float]] = {name: [] for name in encoders}
    embeddings: dict[str, torch.Tensor] = {}
    for _ in range(repeats):  # alternating, so that a slow spell of the machine hits every runtime
        for name, fn in encoders.items():
            t0 = time.perf_counter()
            embeddings[name] = fn()
            times[name].append(time.perf_counter() - t0)
    st_emb = embeddings["sentence_transformers"]
    rates = {name: len(sentences) / statistics.median(t) for name, t in times.items()}
    ratios = {name: rates[name] / rates["sentence_transformers"] for name in runtimes}
    spearman = {name: calc_correlations(torch.nn.functional.cosine_similarity(e[:n], e[n:]).numpy(), gold)["spearman"]
                for name, e in embeddings.items()}  # fmt: skip
    max_diff = {name: float((embeddings[name] - st_emb).abs().max()) for name in runtimes}
    exact = [name for name in runtimes if max_diff[name] <= 1e-5]
    best_exact = max(exact, key=lambda name: ratios[name])
    reference_spearman = spearman["sentence_transformers"]
    ours_spearman = evaluate_sts(ours, dev.items, dev.pairs)["spearman"]
    return {
        "stsb_dev_spearman_pretrained": ours_spearman,
        "stsb_dev_spearman_pretrained_sentence_transformers": reference_spearman,
        "baseline_reproduced_to_3_decimals": round(ours_spearman, 3) == round(reference_spearman, 3),
        "max_abs_embedding_difference": max_diff["torch"],
        "encode": {
            "sentences": len(sentences),
            "batch_size": 32,
            "repeats": repeats,
            "sentences_per_s": rates,
            "seconds": times,
            "max_abs_difference_vs_sentence_transformers": max_diff,
            "stsb_dev_spearman": spearman,
            "speed_ratio_vs_sentence_transformers": ratios,
        },
        # the fastest runtime whose embeddings equal sentence-transformers' within 1e-5
        "encode_speed_ratio_vs_sentence_transformers": ratios[best_exact],
        "encode_speed_exact_runtime": best_exact,
        "encode_speed_ratio_int8": ratios["onnx_int8"],
        "stsb_dev_spearman_int8": spearman["onnx_int8"],
    }


def finetune_stsb(work: Path, dev: TextPairs, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(REPO / "configs" / "stsb.yaml", ["train.progress=false", *overrides])
    started = time.perf_counter()
    result = train_from_config(cfg, work / "stsb", console=console)
    minutes = (time.perf_counter() - started) / 60
    model = load(result.model_dir)
    final = evaluate_sts(model, dev.items, dev.pairs)
    return {
        "stsb_dev_spearman_finetuned": final["spearman"],
        "stsb_dev_pearson_finetuned": final["pearson"],
        "finetune_minutes": minutes,
        # train.wise_ft: the saved weights are interpolated toward the shipped MiniLM after the best
        # epoch; the history's val_spearman is before that, the figure above after it
        "wise_ft": cfg.train.wise_ft,
        "finetune": {"config": "configs/stsb.yaml", "overrides": overrides, "best_epoch": result.best_epoch,
                     "epochs_run": result.epochs_run,
                     "history": [{k: r[k] for k in ("epoch", "train_loss", "val_spearman", "seconds", "items_per_s")}
                                 for r in result.history]},
    }  # fmt: skip


def write_pairs(pairs: TextPairs, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("text_a\ttext_b\tlabel\n")
        for a, b, same in zip(pairs.texts_a, pairs.texts_b, pairs.pairs.same.tolist()):
            if "\t" in a + b or "\n" in a + b:
                raise ValueError("texts with tabs or newlines cannot be written as TSV")
            f.write(f"{a}\t{b}\t{int(same)}\n")


def mrpc(work: Path, root: Path) -> dict[str, Any]:
    pairs = read_text_pair_file(root / "mrpc" / "msr_paraphrase_train.txt")
    train, test = pairs.split(0.2, seed=0)
    write_pairs(train, work / "mrpc-train.tsv")
    write_pairs(test, work / "mrpc-test.tsv")
    cfg = load_config(REPO / "configs" / "mrpc.yaml", [f"data.path={work / 'mrpc-train.tsv'}", "train.progress=false"])
    # the untrained baseline, calibrated on the very pairs the trainer holds out for validation
    _, held = read_text_pair_file(work / "mrpc-train.tsv").split(cfg.data.val_classes, cfg.train.seed)
    base = pretrained_model()
    base.comparator = build_model(cfg.model).comparator  # cosine distance, as the fine-tuned model
    native, _ = pair_similarities(base, held.items, held.pairs)
    base_cal = calibrate(native, held.pairs.same, base.comparator.orientation)
    untrained = evaluate_pairs(base, test.items, test.pairs, base_cal).to_dict()
    started = time.perf_counter()
    result = train_from_config(cfg, work / "mrpc", console=console)
    minutes = (time.perf_counter() - started) / 60
    model = load(result.model_dir)
    tuned = evaluate_pairs(model, test.items, test.pairs, model.calibration).to_dict()
    return {
        "mrpc": {"accuracy": tuned["accuracy"], "f1": tuned["f1"], "untrained_accuracy": untrained["accuracy"],
                 "untrained_f1": untrained["f1"], "finetuned": tuned, "untrained": untrained,
                 "train_pairs": len(train), "test_pairs": len(test), "minutes": minutes,
                 "best_epoch": result.best_epoch},
    }  # fmt: skip


def small_text(work: Path, dev: TextPairs) -> dict[str, Any]:
    cfg = load_config(REPO / "configs" / "text-small.yaml", ["train.progress=false"])
    train = read_text_pair_file(Path(cfg.data.path))
    seed_everything(cfg.train.seed)
    untrained = build_model(cfg.model, texts=train.items.data).eval()
    before = evaluate_sts(untrained, dev.items, dev.pairs)["spearman"]
    started = time.perf_counter()
    result = train_from_config(cfg, work / "small", console=console)
    minutes = (time.perf_counter() - started) / 60
    after = evaluate_sts(load(result.model_dir), dev.items, dev.pairs)["spearman"]
    return {"small_text": {"stsb_dev_spearman_untrained": before, "stsb_dev_spearman_trained": after,
                           "minutes": minutes, "best_epoch": result.best_epoch}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default $TWINNET_DATA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="baseline,small,stsb,mrpc", help="comma-separated parts to run")
    parser.add_argument(
        "--stsb-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the STS-B fine-tuning (repeatable), e.g. loss.name=angle",
    )
    parser.add_argument("--out", default="text", help="result name under bench/results (text)")
    args = parser.parse_args()
    results_file = RESULTS_FILE.with_name(f"{args.out}.json")
    root = data_dir(args.data)
    os.environ["TWINNET_DATA"] = str(root)  # the configs name their files under ${TWINNET_DATA}
    started = time.perf_counter()
    dev = read_text_pair_file(root / "stsbenchmark" / "sts-dev.csv")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twinnet-text-bench-") as tmp:
        work = Path(tmp)
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        unknown = set(parts) - set(PARTS)
        if unknown:
            parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
        previous = results_file.exists() and set(parts) != set(PARTS)
        if previous:
            old = json.loads(results_file.read_text())
            figures.update({k: old[k] for k in old if k not in ("command", "machine", "seconds", "date", "parts")})
        runs = dict(old.get("parts", {})) if previous else {}
        for part in parts:
            console.print(f"{part} …")
            t0 = time.perf_counter()
            if part == "baseline":
                figures.update(baseline_and_speed(dev, args.repeats))
            elif part == "small":
                figures.update(small_text(work, dev))
            elif part == "stsb":
                figures.update(finetune_stsb(work, dev, args.stsb_override))
            else:
                figures.update(mrpc(work, root))
            runs[part] = {"command": " ".join(["python", *sys.argv]), "minutes": (time.perf_counter() - t0) / 60,
                          "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        figures["parts"] = runs
    targets = {"stsb_dev_spearman_pretrained": "0.867 (sentence-transformers, same figure to 3 decimals)",
               "stsb_dev_spearman_finetuned": ">= 0.89", "mrpc": "beat the untrained baseline",
               "encode_speed_ratio_vs_sentence_transformers": ">= 1.5 (same embeddings within 1e-5, or int8 with "
                                                               "its STS-B cost)",
               "finetune_minutes": "<= 20"}  # fmt: skip
    figures["targets"] = targets
    path = write_result(args.out, figures, started)
    table = Table(title="text twins (2 CPU cores)")
    for col in ("measure", "result", "target"):
        table.add_column(col)
    # each part's rows where its figures exist (a result of some parts only, e.g. --out with --parts stsb)
    if "stsb_dev_spearman_pretrained" in figures:
        table.add_row("STS-B dev Spearman, pretrained (twinnet / sentence-transformers)",
                      f"{figures['stsb_dev_spearman_pretrained']:.4f} / "
                      f"{figures['stsb_dev_spearman_pretrained_sentence_transformers']:.4f}", targets[
                          "stsb_dev_spearman_pretrained"])  # fmt: skip
        e, exact = figures["encode"], figures["encode_speed_exact_runtime"]
        table.add_row("encode speed ratio (sentences/s twinnet / sentence-transformers)",
                      f"{figures['encode_speed_ratio_vs_sentence_transformers']:.2f} "
                      f"({exact}: {e['sentences_per_s'][exact]:.0f} / "
                      f"{e['sentences_per_s']['sentence_transformers']:.0f})",
                      targets["encode_speed_ratio_vs_sentence_transformers"])  # fmt: skip
        table.add_row("encode speed ratio, ONNX int8 (STS-B dev Spearman)",
                      f"{figures['encode_speed_ratio_int8']:.2f} ({figures['stsb_dev_spearman_int8']:.4f})",
                      "")  # fmt: skip
    if "small_text" in figures:
        s = figures["small_text"]
        table.add_row("small_text from scratch, STS-B dev Spearman (untrained → trained)",
                      f"{s['stsb_dev_spearman_untrained']:.4f} → {s['stsb_dev_spearman_trained']:.4f}", "")  # fmt: skip
    if "finetune_minutes" in figures:
        table.add_row("STS-B dev Spearman, fine-tuned", f"{figures['stsb_dev_spearman_finetuned']:.4f}",
                      targets["stsb_dev_spearman_finetuned"])  # fmt: skip
        table.add_row("fine-tuning minutes", f"{figures['finetune_minutes']:.1f}", targets["finetune_minutes"])
    if "mrpc" in figures:
        m = figures["mrpc"]
        table.add_row("MRPC held-out accuracy / F1 (untrained → fine-tuned)",
                      f"{m['untrained_accuracy']:.3f}/{m['untrained_f1']:.3f} → {m['accuracy']:.3f}/{m['f1']:.3f}",
                      targets["mrpc"])  # fmt: skip
    Console().print(table)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
