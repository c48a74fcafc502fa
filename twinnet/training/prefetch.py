"""Batches built on a background thread, one or two ahead, so the model rarely waits."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from twinnet.training.batch import Batch


class Prefetcher:
    """Runs batch jobs in order on one background thread, keeping at most ``depth`` batches ready.

    The jobs run in order on a single thread, so random streams they share (augmentation) are drawn
    in the same order every time. The time the training loop spends blocked in ``next`` is the
    data-wait time it reports. An exception in a job is raised in the consumer.
    """

    def __init__(self, jobs: list[Callable[[], Batch]], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(jobs,), daemon=True)
        self._thread.start()

    def _run(self, jobs: list[Callable[[], Batch]]) -> None:
        for job in jobs:
            if self._stop.is_set():
                return
            try:
                item: Any = job()
            except BaseException as err:  # handed to the consumer, raised there
                item = err
            self._queue.put(item)
            if isinstance(item, BaseException):
                return
        self._queue.put(None)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # drain, so a producer blocked on a full queue can exit
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
