"""Load generator (run as its own process by bench/serve.py): N concurrent clients for T seconds."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def main(url: str, endpoint: str, seconds: float, clients: int, key: str, files_json: str) -> None:
    payloads = json.loads(files_json)  # {field: path}
    files = {name: open(path, "rb").read() for name, path in payloads.items()}  # noqa: SIM115
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await client.post(
                        url + endpoint, files={k: (k + ".png", v, "image/png") for k, v in files.items()}
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "requests": n, "requests_per_s": n / elapsed, "errors": errors,
        "p50_ms": latencies[n // 2] if n else None, "p99_ms": latencies[min(n - 1, int(n * 0.99))] if n else None,
    }))  # fmt: skip


if __name__ == "__main__":
    url, endpoint, seconds, clients, key, files_json = sys.argv[1:7]
    asyncio.run(main(url, endpoint, float(seconds), int(clients), key, files_json))
