"""The REST service under load: ``/verify`` and ``/identify`` with a small conv model.

Trains the quickstart model (20 s) unless ``--model`` is given, enrols ``--identities`` unseen
digits into a gallery, starts ``twinnet serve`` on 127.0.0.1, and drives each endpoint from a
separate process with ``--clients`` concurrent clients for ``--seconds`` seconds.

    python bench/serve.py [--seconds 30] [--clients 32]
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import start_service, write_result
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp())
    if args.model is None:
        from twinnet.quickstart import run_quickstart

        run_quickstart(tmp / "qs", progress=False)
        model, examples = tmp / "qs" / "model", tmp / "qs" / "examples" / "unseen"
    else:
        model, examples = args.model, None
    from twinnet.gallery import Gallery
    from twinnet.gallery.cli_ops import enroll_folder
    from twinnet.io import load

    gallery_dir = tmp / "gallery"
    with Gallery.create(gallery_dir, load(model)) as g:
        enroll_folder(g, examples)
        counts = g.count()
    key = secrets.token_hex(16)
    server, url = start_service(model, gallery_dir, key, subprocess.DEVNULL)
    try:
        a, b = examples / "6" / "0000.png", examples / "6" / "0001.png"
        results = {}
        for endpoint, files in (("/verify", {"a": str(a), "b": str(b)}), ("/identify", {"inputs": str(a)})):
            command = [sys.executable, str(HERE / "_load.py"), url, endpoint, str(args.seconds), str(args.clients), key,
                       json.dumps(files)]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            results[endpoint.strip("/")] = {k: round(v, 3) if isinstance(v, float) else v
                                            for k, v in json.loads(proc.stdout).items()}  # fmt: skip
        health = httpx.get(url + "/health").json()
    finally:
        server.terminate()
        server.wait(10)
    table = Table(title=f"twinnet serve under load: {args.clients} clients × {args.seconds:g} s per endpoint")
    for col in ("endpoint", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["errors"]))
    Console().print(table)
    figures = {**results, "clients": args.clients, "seconds_per_endpoint": args.seconds, "gallery": counts,
               "model_batches": health["batches"], "embedded": health["embedded"],
               "mean_batch": round(health["embedded"] / max(1, health["batches"]), 2)}  # fmt: skip
    print(f"wrote {write_result('serve', figures, started)}")


if __name__ == "__main__":
    main()
