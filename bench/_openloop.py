"""Open-loop load generator (run as its own process by bench/serve.py).

Requests are *scheduled* at a fixed offered rate, whether or not earlier ones have been answered,
and each latency is measured from its scheduled send time — so a stalled server shows up as
latency instead of silently lowering the load (no coordinated omission). HTTP/1.1 keep-alive on
raw asyncio streams with the request bytes built once: the generator spends a few microseconds per
request, so its own ceiling (printed as ``generator_ceiling_rps`` by ``--ceiling``) is far above
the rates it offers.

    python bench/_openloop.py HOST PORT REQUEST_FILE RATE SECONDS [MAX_CONNECTIONS]

``REQUEST_FILE`` holds one complete HTTP/1.1 request (headers and body). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        """Send one request, read its whole response; the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status


async def run(host: str, port: int, request: bytes, rate: float, seconds: float, max_connections: int) -> dict:
    idle: deque[Connection] = deque()
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}

    async def one(scheduled: float) -> None:
        nonlocal opened, errors
        async with slots:  # past max_connections a request queues here, and its wait counts as latency
            conn = idle.popleft() if idle else None
            try:
                if conn is None:
                    conn = Connection(*await asyncio.open_connection(host, port))
                    opened += 1
                status = await conn.exchange(request)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
                idle.append(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                if conn is not None:
                    conn.writer.close()
        latencies.append((time.perf_counter() - scheduled) * 1000)

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(scheduled)))
    send_end = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.writer.close()
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float | None:
        return round(latencies[min(n - 1, int(n * q))], 3) if n else None

    return {
        "offered_rps": rate,
        "requests": n,
        "requests_per_s": round(n / elapsed, 2),
        "send_lag_s": round(send_end - (start + (total - 1) / rate), 4),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connections_opened": opened,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 3) if n else None,
    }


def main() -> None:
    host, port, request_file, rate, seconds = sys.argv[1:6]
    max_connections = int(sys.argv[6]) if len(sys.argv) > 6 else 256
    with open(request_file, "rb") as f:
        request = f.read()
    print(json.dumps(asyncio.run(run(host, int(port), request, float(rate), float(seconds), max_connections))))


if __name__ == "__main__":
    main()
