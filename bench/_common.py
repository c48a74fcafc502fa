"""Helpers shared by the benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # other work on the machine while a benchmark ran makes its timings pessimistic; say so
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def latencies(fn: Any, queries: Any, repeat: int) -> Any:
    """Milliseconds of ``fn`` on each of the first ``repeat`` queries, one at a time (a batch of one)."""
    import numpy as np

    out = []
    for q in queries[:repeat]:
        t = time.perf_counter()
        fn(q[None])
        out.append((time.perf_counter() - t) * 1000)
    return np.asarray(out)


def write_result(name: str, figures: dict[str, Any], started: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **figures,
    }
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)  # never a half-written result file
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(model: Path, gallery: Path | None, key: str, stderr: Any) -> tuple[Any, str]:
    """``twinnet serve MODEL --gallery GALLERY`` on a free port with API key ``key``, started in a
    subprocess and waited for until ``/health`` answers; returns the process and its URL."""
    import subprocess

    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TWINNET_API_KEYS": key}
    command = [sys.executable, "-m", "twinnet", "serve", str(model), "--port", str(port)]
    if gallery is not None:  # None: a service without a gallery
        command += ["--gallery", str(gallery)]
    server = subprocess.Popen(command, env=env, stderr=stderr)
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(url + "/health", headers={"X-API-Key": key}).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("the service did not start")
        time.sleep(0.2)
