"""The REST service under mixed load, with a second writer, then a consistency check.

Trains the quickstart model (20 s) unless ``--model`` is given, starts ``twinnet serve`` with a
gallery on 127.0.0.1, and for ``--seconds`` seconds drives it with ``--clients`` concurrent clients
mixing enrol, identify, verify and delete, while ``twinnet gallery enroll`` (the CLI, one process
after another) enrols into the same gallery directory. Then it checks that what was acknowledged
is there: every acknowledged enrolment not deleted is listed once, with one template, and found
by ``/identify``; the counts of ``/health``, the listing and the acknowledgements agree; and the
same after the service is stopped and the gallery opened afresh.

    python bench/soak.py [--seconds 60] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import torch
from _common import start_service, write_result
from PIL import Image
from rich.console import Console
from rich.table import Table

#: Each client's mix of operations (weights); a delete removes one of the client's own identities.
MIX = {"enroll": 3, "identify": 4, "verify": 2, "delete": 1}
#: Client-side limit per request: a request that takes longer counts as an error, so the run ends.
REQUEST_TIMEOUT_S = 30.0
#: How many probes one /identify of the final check carries (the service takes up to 64).
PROBES_PER_REQUEST = 64
TOP_K = 5


def image_of(seed: int, size: tuple[int, int]) -> bytes:
    """A PNG of noise, distinct for each seed: one identity's one template, and its probe."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Ledger:
    """What the service and the CLI acknowledged, and every request's latency."""

    seeds: dict[str, int] = field(default_factory=dict)  # identity → the seed of its image
    enrolled: set[str] = field(default_factory=set)  # acknowledged (200 / exit 0)
    deleted: set[str] = field(default_factory=set)  # acknowledged deletes
    uncertain: set[str] = field(default_factory=set)  # no answer (timeout, connection): may or may not be stored
    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in MIX})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MIX, 0))
    error_samples: list[str] = field(default_factory=list)
    cli_seconds: list[float] = field(default_factory=list)
    cli_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, op: str, what: str) -> None:
        with self.lock:
            self.errors[op] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{op}: {what[:200]}")


async def client_loop(cid: int, client: httpx.AsyncClient, url: str, stop: float, ledger: Ledger,
                      size: tuple[int, int]) -> None:  # fmt: skip
    rng = random.Random(cid)
    mine: list[str] = []  # this client's identities, enrolled and not deleted
    ops, weights = list(MIX), list(MIX.values())
    n = 0
    while time.perf_counter() < stop:
        op = rng.choices(ops, weights)[0]
        if op in ("delete", "identify") and not mine:
            op = "enroll"
        t = time.perf_counter()
        try:
            if op == "enroll":
                identity, seed = f"rest-{cid}-{n}", cid * 1_000_000 + n
                n += 1
                ledger.seeds[identity] = seed
                try:
                    r = await client.post(url + "/enroll", data={"identity": identity},
                                          files={"inputs": ("x.png", image_of(seed, size), "image/png")})  # fmt: skip
                except httpx.HTTPError:
                    ledger.uncertain.add(identity)
                    raise
                if r.status_code == 200:
                    ledger.enrolled.add(identity)
                    mine.append(identity)
            elif op == "identify":
                probe = image_of(ledger.seeds[rng.choice(mine)], size)
                r = await client.post(url + f"/identify?top_k={TOP_K}", files={"inputs": ("x.png", probe, "image/png")})
            elif op == "verify":
                a, b = image_of(rng.randrange(1 << 30), size), image_of(rng.randrange(1 << 30), size)
                r = await client.post(url + "/verify", files={"a": ("a.png", a, "image/png"),
                                                              "b": ("b.png", b, "image/png")})  # fmt: skip
            else:
                identity = mine.pop(rng.randrange(len(mine)))
                r = await client.delete(url + "/identities/" + quote(identity, safe=""))
                if r.status_code == 200:
                    ledger.deleted.add(identity)
                else:
                    mine.append(identity)
            if r.status_code != 200:
                ledger.error(op, f"{r.status_code} {r.text}")
        except httpx.HTTPError as err:
            ledger.error(op, f"{type(err).__name__}: {err}")
        ledger.latencies[op].append((time.perf_counter() - t) * 1000)


async def drive(url: str, key: str, seconds: float, clients: int, ledger: Ledger, size: tuple[int, int]) -> float:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        started = time.perf_counter()
        stop = started + seconds
        await asyncio.gather(*(client_loop(c, client, url, stop, ledger, size) for c in range(clients)))
        return time.perf_counter() - started


def cli_writer(model: Path, gallery: Path, folder: Path, stop: float, ledger: Ledger, size: tuple[int, int]) -> None:
    """``twinnet gallery enroll`` one process after another until ``stop``: a second writer."""
    i = 0
    while time.perf_counter() < stop:
        identity, seed = f"cli-{i}", 2_000_000_000 + i
        path = folder / f"{identity}.png"
        path.write_bytes(image_of(seed, size))
        ledger.seeds[identity] = seed
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "twinnet", "gallery", "enroll", str(model), "--gallery",
                                   str(gallery), "--id", identity, str(path), "--json"],
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
        except subprocess.TimeoutExpired:
            ledger.uncertain.add(identity)
            ledger.cli_failures += 1
            ledger.error_samples.append(f"cli {identity}: timed out")
            continue
        finally:
            i += 1
        ledger.cli_seconds.append(time.perf_counter() - t)
        if proc.returncode == 0:
            ledger.enrolled.add(identity)
        else:
            ledger.uncertain.add(identity)  # a failed process may have committed before failing
            ledger.cli_failures += 1
            if len(ledger.error_samples) < 10:
                ledger.error_samples.append(f"cli {identity}: exit {proc.returncode}: {proc.stderr.strip()[-200:]}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def listing(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(url + "/identities", params={"offset": len(items), "limit": 10_000}).json()["identities"]
        items += page
        if len(page) < 10_000:
            return items


def missed_by_service(client: httpx.Client, url: str, expected: list[str], ledger: Ledger,
                      size: tuple[int, int]) -> list[str]:  # fmt: skip
    missed = []
    for i in range(0, len(expected), PROBES_PER_REQUEST):
        names = expected[i : i + PROBES_PER_REQUEST]
        files = [("inputs", (f"{n}.png", image_of(ledger.seeds[n], size), "image/png")) for n in names]
        r = client.post(url + f"/identify?top_k={TOP_K}", files=files)
        r.raise_for_status()
        for name, result in zip(names, r.json()["results"]):
            if name not in [m["identity"] for m in result["matches"]]:
                missed.append(name)
    return missed


def check(items: list[dict[str, Any]], expected: set[str], ledger: Ledger) -> dict[str, Any]:
    """Lost, duplicated and unexpected identities, from a listing of the gallery."""
    ids = [item["id"] for item in items]
    listed = set(ids)
    extra_templates = sum(max(0, item["templates"] - 1) for item in items)  # each enrolment added one template
    return {
        "listed": len(listed),
        "lost": len(expected - listed),
        "duplicates": len(ids) - len(listed) + extra_templates,
        "unexpected": len(listed - expected - ledger.uncertain),  # deleted or never acknowledged, yet there
        "uncertain_present": len(listed & ledger.uncertain),
        "lost_examples": sorted(expected - listed)[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="A saved image model (default: train the quickstart).")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--no-cli-writer", action="store_true", help="Only the service writes (for comparison).")
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="twinnet-soak-"))
    if args.model is None:
        from twinnet.quickstart import run_quickstart

        run_quickstart(tmp / "qs", progress=False)
        model = tmp / "qs" / "model"
    else:
        model = args.model
    from twinnet.data.images import decode_image, to_float
    from twinnet.gallery import Gallery
    from twinnet.io import load

    loaded = load(model)
    spec = loaded.input_spec("a")
    if spec.kind != "image":
        raise SystemExit(f"{model}: the soak needs an image model, not {spec.kind}")
    size = tuple(spec.size)
    gallery_dir = tmp / "gallery"
    Gallery.create(gallery_dir, loaded).close()
    key = secrets.token_hex(16)
    log = tmp / "serve.log"
    with log.open("w") as log_file:
        try:
            server, url = start_service(model, gallery_dir, key, log_file)
        except SystemExit:
            raise SystemExit(f"the service did not start:\n{log.read_text()[-2000:]}") from None
    ledger = Ledger()
    try:
        stop = time.perf_counter() + args.seconds
        (tmp / "cli").mkdir()
        writer = threading.Thread(target=cli_writer, args=(model, gallery_dir, tmp / "cli", stop, ledger, size))
        if not args.no_cli_writer:
            writer.start()
        elapsed = asyncio.run(drive(url, key, args.seconds, args.clients, ledger, size))
        if writer.is_alive():
            writer.join(180)
        expected = ledger.enrolled - ledger.deleted
        with httpx.Client(headers={"X-API-Key": key}, timeout=120) as client:
            items = listing(client, url)
            live = check(items, expected, ledger)
            live["missed_by_identify"] = len(missed_by_service(client, url, sorted(expected), ledger, size))
            health = client.get(url + "/health").json()
        counts = health["gallery"]
        live["counts_match"] = counts == {"identities": len(items), "templates": sum(i["templates"] for i in items)}
    finally:
        server.terminate()
        server.wait(30)
    # the same checks on the gallery as a new process sees it, with the service stopped
    with Gallery.open(gallery_dir, loaded) as g:
        reopened = check(g.list(), expected, ledger)
        names = sorted(expected)
        # decoded as the service and the CLI decode them
        probes = [to_float(decode_image(Image.open(io.BytesIO(image_of(ledger.seeds[n], size))), spec)) for n in names]
        results = g.identify_batch(torch.stack(probes), TOP_K) if names else []
        reopened["missed_by_identify"] = sum(n not in [m.identity for m in r.matches] for n, r in zip(names, results))
        reopened["counts"] = counted = g.count()
        templates = sum(i["templates"] for i in g.list())
        reopened["counts_match"] = counted == {"identities": reopened["listed"], "templates": templates}

    endpoints = {op: {"requests": len(ledger.latencies[op]), "errors": ledger.errors[op],
                      "p50_ms": percentile(ledger.latencies[op], 0.5), "p99_ms": percentile(ledger.latencies[op], 0.99)}
                 for op in MIX}  # fmt: skip
    requests = sum(e["requests"] for e in endpoints.values())
    table = Table(title=f"twinnet serve soak: {args.clients} clients × {args.seconds:g} s, mixed, + a CLI writer")
    for col in ("endpoint", "requests", "errors", "p50 ms", "p99 ms"):
        table.add_column(col)
    for op, e in endpoints.items():
        table.add_row(op, str(e["requests"]), str(e["errors"]), str(e["p50_ms"]), str(e["p99_ms"]))
    console = Console()
    console.print(table)
    cli = {"enrolments": len([i for i in ledger.enrolled if i.startswith("cli-")]), "failures": ledger.cli_failures,
           "p50_s": round(float(np.median(ledger.cli_seconds)), 2) if ledger.cli_seconds else None}  # fmt: skip
    console.print(f"expected {len(expected)} identities; live: {live}; reopened: {reopened}; cli: {cli}")
    if ledger.error_samples:
        console.print("first errors:", *ledger.error_samples, sep="\n  ")
    figures = {
        "requests": requests, "requests_per_s": round(requests / elapsed, 1),
        "errors": sum(e["errors"] for e in endpoints.values()) + ledger.cli_failures,
        "endpoints": endpoints, "cli_writer": cli, "clients": args.clients, "seconds_of_load": args.seconds,
        "acknowledged": {"enrolled": len(ledger.enrolled), "deleted": len(ledger.deleted),
                         "expected": len(expected), "uncertain": len(ledger.uncertain)},
        "lost": live["lost"], "duplicates": live["duplicates"], "missed_by_identify": live["missed_by_identify"],
        "live": live, "reopened": reopened, "error_samples": ledger.error_samples,
        "model_batches": health["batches"], "embedded": health["embedded"],
    }  # fmt: skip
    print(f"wrote {write_result('soak', figures, started)}")


if __name__ == "__main__":
    main()
