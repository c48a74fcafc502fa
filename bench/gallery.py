"""Gallery search at scale: 1,000,000 random unit vectors of dimension 128.

Enrolment time (SQLite + exact FAISS index through ``Gallery.enroll_many``), identify latency
p50/p99 for single queries and batched, exact (flat) and approximate (HNSW), recall@1 of the
approximate index against the exact one, scikit-learn's brute-force ``NearestNeighbors`` on the
same queries in the same run, and peak memory. Queries are probes of enrolled identities: an
enrolled vector plus noise, renormalised (random unrelated queries have no meaningful nearest
neighbour in 128 dimensions). The approximate index is IVF (√n lists, nprobe 48), the gallery's
``auto`` choice; ``--approx hnsw`` measures HNSW instead.

    python bench/gallery.py [--n 1000000] [--dim 128] [--queries 1000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
from _common import write_result
from rich.console import Console
from rich.table import Table
from sklearn.neighbors import NearestNeighbors

from twinnet.gallery import Gallery
from twinnet.gallery.index import FaissIndex


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def latencies(fn, queries: np.ndarray, repeat: int) -> np.ndarray:
    out = []
    for q in queries[:repeat]:
        t = time.perf_counter()
        fn(q[None])
        out.append((time.perf_counter() - t) * 1000)
    return np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="single-query latency samples")
    parser.add_argument("--approx", choices=["ivf", "hnsw"], default="ivf")
    parser.add_argument("--nprobe", type=int, default=48)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--sklearn-queries", type=int, default=1000, help="the same batch as the exact figure")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((args.n, args.dim), dtype=np.float32))
    targets = rng.integers(0, args.n, args.queries)
    queries = unit(vectors[targets] + rng.normal(scale=0.05, size=(args.queries, args.dim)).astype(np.float32))
    names = [f"id{i}" for i in range(args.n)]
    figures: dict = {"n": args.n, "dim": args.dim, "queries": args.queries}

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        gallery = Gallery.create(f"{tmp}/g", dim=args.dim, metric="euclidean", index="flat")
        gallery.enroll_many(names, vectors)
        figures["enrol_seconds"] = round(time.perf_counter() - t, 2)
        exact = gallery._index
        truth = exact.search(queries, 1)[1][:, 0]
        figures["exact_recall_at_1_of_true_identity"] = float((truth == targets + 1).mean())  # rowids start at 1

        t = time.perf_counter()
        exact.search(queries, 10)
        figures["exact_batched_ms_per_query"] = round((time.perf_counter() - t) * 1000 / args.queries, 4)
        single = latencies(lambda q: exact.search(q, 10), queries, args.single)
        figures["exact_single_p50_ms"], figures["exact_single_p99_ms"] = (
            round(float(np.percentile(single, 50)), 3), round(float(np.percentile(single, 99)), 3))  # fmt: skip
        api = latencies(lambda q: gallery.identify_batch(q, 5), queries, args.single)
        figures["gallery_identify_single_p50_ms"] = round(float(np.percentile(api, 50)), 3)
        figures["gallery_identify_single_p99_ms"] = round(float(np.percentile(api, 99)), 3)
        gallery.close()

    t = time.perf_counter()
    if args.approx == "ivf":
        approx = FaissIndex(args.dim, "l2", "ivf", nprobe=args.nprobe)
    else:
        approx = FaissIndex(args.dim, "l2", "hnsw", hnsw_m=args.hnsw_m, ef_search=args.ef_search)
    approx.add(np.arange(1, args.n + 1), vectors)
    figures["approx_build_seconds"] = round(time.perf_counter() - t, 2)
    base = approx.base
    figures["approx_index"] = (f"IVF lists={base.nlist} nprobe={args.nprobe}" if args.approx == "ivf"
                               else f"HNSW M={args.hnsw_m} efSearch={args.ef_search}")  # fmt: skip
    t = time.perf_counter()
    found = approx.search(queries, 10)[1][:, 0]
    figures["approx_ms_per_query"] = round((time.perf_counter() - t) * 1000 / args.queries, 4)
    figures["approx_recall_at_1"] = float((found == truth).mean())
    single = latencies(lambda q: approx.search(q, 10), queries, args.single)
    figures["approx_single_p50_ms"], figures["approx_single_p99_ms"] = (
        round(float(np.percentile(single, 50)), 3), round(float(np.percentile(single, 99)), 3))  # fmt: skip

    # scikit-learn brute force on the same vectors and (a subset of) the same queries
    nn = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="euclidean").fit(vectors)
    sub = queries[: args.sklearn_queries]
    nn.kneighbors(sub[:10])  # warm-up, as for FAISS below
    t = time.perf_counter()
    nn.kneighbors(sub)
    sklearn_ms = (time.perf_counter() - t) * 1000 / len(sub)
    exact_index = FaissIndex(args.dim, "l2", "flat")
    exact_index.add(np.arange(args.n), vectors)
    exact_index.search(sub[:100], 10)
    t = time.perf_counter()
    exact_index.search(sub, 10)
    faiss_ms = (time.perf_counter() - t) * 1000 / len(sub)
    figures["sklearn_brute_ms_per_query"] = round(sklearn_ms, 4)
    figures["faiss_exact_ms_per_query_same_queries"] = round(faiss_ms, 4)
    figures["faiss_speedup_vs_sklearn"] = round(sklearn_ms / faiss_ms, 2)
    figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    table = Table(title=f"gallery search, {args.n:,} × {args.dim}-d unit vectors")
    table.add_column("measure")
    table.add_column("value")
    for k, v in figures.items():
        table.add_row(k, str(v))
    Console().print(table)
    print(f"wrote {write_result('gallery', figures, started)}")


if __name__ == "__main__":
    main()
