"""The REST service against its framework's ceiling, closed loop and open loop.

Trains the quickstart model (20 s) unless ``--model`` is given, enrols unseen digits into a
gallery and starts three processes on 127.0.0.1, each run by uvicorn exactly as ``twinnet serve``
runs: the **bare** ceiling (a FastAPI endpoint that returns a constant), ``twinnet serve`` with the
conv model, and ``twinnet serve`` with the packaged MiniLM text twin. Each of ``bare``, ``verify``,
``identify`` and ``text_verify`` is then driven

* closed loop by ``wrk`` (C, Debian package ``wrk``) with ``--clients`` connections, and
* open loop at fixed offered rates (``--rates``) by bench/_openloop.py, which schedules requests
  whether or not earlier ones were answered and measures latency from the scheduled time.

Every target gets the same request bytes (a multipart body of two 28×28 PNGs, or a JSON pair of
sentences), built once. Load generator and server share the machine's cores, as they would on a
2-core box; the generator's ceiling is the bare endpoint's row.

    python bench/serve.py [--seconds 10] [--clients 32] [--rates 50,100,200,400]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, start_service, write_result
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent

WRK_SCRIPT = r"""
local f = io.open(os.getenv("TWINNET_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("TWINNET_CTYPE")
wrk.headers["X-API-Key"] = os.getenv("TWINNET_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n', summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50),
    latency:percentile(99), latency.max))
end
"""


def multipart(parts: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "twinnet" + secrets.token_hex(8)
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in parts.items()
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Target:
    """One endpoint under load: where it is and the exact request it gets."""

    def __init__(self, name: str, url: str, path: str, body: bytes, content_type: str, key: str, work: Path) -> None:
        self.name, self.url, self.path, self.key = name, url, path, key
        self.content_type = content_type
        self.body_file = work / f"{name}.body"
        self.body_file.write_bytes(body)
        host_port = url.split("//", 1)[1]
        self.host, self.port = host_port.rsplit(":", 1)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\nX-API-Key: {key}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self.request_file = work / f"{name}.http"
        self.request_file.write_bytes(head.encode() + body)

    def check(self) -> None:
        r = httpx.post(self.url + self.path, content=self.body_file.read_bytes(),
                       headers={"Content-Type": self.content_type, "X-API-Key": self.key})  # fmt: skip
        if r.status_code != 200:
            raise SystemExit(f"{self.name}: {r.status_code} {r.text}")

    def closed(self, clients: int, seconds: float, wrk: str, script: Path) -> dict[str, Any]:
        env = {**os.environ, "TWINNET_BODY": str(self.body_file), "TWINNET_CTYPE": self.content_type,
               "TWINNET_KEY": self.key}  # fmt: skip
        proc = subprocess.run([wrk, "-t2", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                               self.url + self.path], capture_output=True, text=True, env=env)  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"wrk failed on {self.name}: {proc.stdout}{proc.stderr}")
        r = json.loads(lines[-1])
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        return {"clients": clients, "requests": r["requests"],
                "requests_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1), "errors": errors,
                "p50_ms": round(r["p50_us"] / 1000, 2), "p99_ms": round(r["p99_us"] / 1000, 2),
                "max_ms": round(r["max_us"] / 1000, 2)}  # fmt: skip

    def open(self, rate: float, seconds: float) -> dict[str, Any]:
        command = [sys.executable, str(HERE / "_openloop.py"), self.host, self.port, str(self.request_file),
                   str(rate), str(seconds)]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"open-loop generator failed on {self.name}: {proc.stderr}")
        return json.loads(proc.stdout)


def start_bare(stderr: Any) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "_bare_app.py"), str(port)], stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the bare app did not start")


def text_model(path: Path) -> None:
    """The packaged MiniLM as a cosine twin (no training: the bench measures speed, not accuracy)."""
    import twinnet
    from twinnet.config import ModelConfig

    config = ModelConfig.model_validate({"input": {"kind": "text"}, "encoder": {"name": "text"},
                                         "comparator": {"name": "cosine"}})  # fmt: skip
    twinnet.save(twinnet.build_model(config).eval(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="an image model (default: train the quickstart)")
    parser.add_argument("--seconds", type=float, default=10, help="per load level")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--rates", default="50,100,200,400", help="open-loop offered rates (requests/s)")
    parser.add_argument("--no-text", action="store_true", help="skip the MiniLM text service")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench/serve.py needs wrk for its closed-loop runs: apt-get install wrk")
    rates = [float(r) for r in args.rates.split(",")]
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp())
    script = work / "multipart.lua"
    script.write_text(WRK_SCRIPT)
    if args.model is None:
        from twinnet.quickstart import run_quickstart

        run_quickstart(work / "qs", progress=False)
        model, examples = work / "qs" / "model", work / "qs" / "examples" / "unseen"
    else:
        model, examples = args.model, None
    from twinnet.gallery import Gallery
    from twinnet.gallery.cli_ops import enroll_folder
    from twinnet.io import load

    gallery_dir = work / "gallery"
    with Gallery.create(gallery_dir, load(model)) as g:
        enroll_folder(g, examples)
        counts = g.count()
    key = secrets.token_hex(16)
    a, b = (examples / "6" / "0000.png").read_bytes(), (examples / "6" / "0001.png").read_bytes()
    pair_body, pair_type = multipart({"a": a, "b": b})
    one_body, one_type = multipart({"inputs": a})
    text_body = json.dumps({"a": "A man is playing a guitar.", "b": "Someone plays the guitar on a stage."}).encode()
    servers: list[subprocess.Popen] = []
    results: dict[str, dict[str, Any]] = {}
    health: dict[str, Any] = {}
    try:
        bare, bare_url = start_bare(subprocess.DEVNULL)
        servers.append(bare)
        service, url = start_service(model, gallery_dir, key, subprocess.DEVNULL)
        servers.append(service)
        targets = [Target("bare", bare_url, "/verify", pair_body, pair_type, key, work),
                   Target("verify", url, "/verify", pair_body, pair_type, key, work),
                   Target("identify", url, "/identify", one_body, one_type, key, work)]  # fmt: skip
        if not args.no_text:
            text_model(work / "minilm")
            text_service, text_url = start_service(work / "minilm", None, key, subprocess.DEVNULL)
            servers.append(text_service)
            targets.append(Target("text_verify", text_url, "/verify?threshold=0.5", text_body, "application/json",
                                  key, work))  # fmt: skip
        for target in targets:
            target.check()
            target.open(20, 2)  # warm-up: connections, allocator, first batches
            levels = {f"closed_{args.clients}": target.closed(args.clients, args.seconds, wrk, script)}
            for rate in rates:
                levels[f"open_{rate:g}"] = target.open(rate, args.seconds)
            results[target.name] = levels
            print(target.name, json.dumps(levels), flush=True)
        health = httpx.get(url + "/health", headers={"X-API-Key": key}).json()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    closed = f"closed_{args.clients}"
    table = Table(title=f"twinnet serve vs a bare FastAPI endpoint ({args.seconds:g} s per level)")
    for col in ("target", "load", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col)
    for name, levels in results.items():
        for level, r in levels.items():
            table.add_row(name, level, f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                          str(r["errors"]))  # fmt: skip
    Console().print(table)
    ratio = results["verify"][closed]["requests_per_s"] / results["bare"][closed]["requests_per_s"]
    figures: dict[str, Any] = {
        **results,
        "verify_ratio_vs_bare": round(ratio, 3),
        "clients": args.clients, "seconds_per_level": args.seconds, "rates": rates, "gallery": counts,
        "model_batches": health.get("batches"), "embedded": health.get("embedded"),
        "mean_batch": round(health["embedded"] / max(1, health["batches"]), 2) if health else None,
        "load_generators": {"closed": "wrk 4.1 (-t2)", "open": "bench/_openloop.py (asyncio, latency from the "
                                                               "scheduled send time)"},
    }  # fmt: skip
    print(f"verify / bare (closed loop): {ratio:.3f}")
    print(f"wrote {write_result('serve', figures, started)}")


if __name__ == "__main__":
    main()
