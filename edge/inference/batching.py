"""Batched inference across all devices: one :class:`BatchScheduler` (and one thread) per loaded engine.

Devices submit windows (:class:`InferenceRequest`); the scheduler thread collects them into batches of at most
``max_batch`` windows, waiting at most ``max_wait_ms`` after the first window of a batch, runs the engine once per
batch and hands each window's output row back through ``deliver`` (the application routes it to the worker that owns
the device). The engine is used only by its scheduler thread, so it needs no lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.inference import Engine

log = logging.getLogger(__name__)


@dataclass
class InferenceRequest:
    """One window to run: ``window`` is ``(C, T)`` mV at the engine's rate; ``key`` tells the device what it was;
    ``features`` is the engine's per-window feature vector ``(K,)`` when its manifest declares ``feature_names``."""

    device: str
    kind: str
    key: Any
    window: np.ndarray
    ready_wall: float = field(default_factory=time.monotonic)
    features: np.ndarray | None = None


@dataclass
class SchedulerStats:
    """Counts of one scheduler (monotonic)."""

    batches: int = 0
    windows: int = 0
    rejected: int = 0
    failed: int = 0
    infer_s: float = 0.0
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=1000))

    def summary(self) -> dict[str, float]:
        sizes = np.asarray(self.batch_sizes, dtype=float)
        return {"batches": self.batches, "windows": self.windows, "rejected": self.rejected, "failed": self.failed,
                "mean_batch": round(float(sizes.mean()), 2) if len(sizes) else 0.0,
                "infer_s": round(self.infer_s, 3)}


class BatchScheduler:
    """Collects :class:`InferenceRequest` from all devices and runs them through one engine in batches.

    Args:
        engine: the loaded engine (used only by this scheduler's thread).
        deliver: called on the scheduler thread with ``(request, output)`` for each window; ``output`` is the
            engine's row for it (``None`` when the batch failed).
        max_batch: most windows per engine call (also bounded by the engine's own ``max_batch``).
        max_wait_ms: longest a window waits for others to join its batch.
        queue_size: bound of pending windows; beyond it ``submit`` refuses (counted as rejected).
    """

    def __init__(self, engine: Engine, deliver: Callable[[InferenceRequest, np.ndarray | None], None],
                 max_batch: int = 64, max_wait_ms: float = 20.0, queue_size: int = 4096):
        self.engine = engine
        self.deliver = deliver
        self.max_batch = max(1, min(max_batch, engine.manifest.max_batch))
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = SchedulerStats()
        self._queue: queue.Queue[InferenceRequest | None] = queue.Queue(queue_size)
        self.thread = threading.Thread(target=self._loop, name=f"infer-{engine.manifest.name}", daemon=True)

    def start(self) -> BatchScheduler:
        self.thread.start()
        return self

    def submit(self, request: InferenceRequest) -> bool:
        """Queue a window; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(request)
            return True
        except queue.Full:
            self.stats.rejected += 1
            return False

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted window has been run and delivered; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def stop(self, timeout_s: float = 5.0) -> None:
        """Run what is queued, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.error("engine %s: queue still full at stop; %d windows not run", self.engine.manifest.name,
                      self._queue.qsize())
            return
        self.thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.task_done()
                    stop = True
                    break
                batch.append(item)
            try:
                self._run(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _run(self, batch: list[InferenceRequest]) -> None:
        t = time.perf_counter()
        try:
            windows = np.stack([r.window for r in batch]).astype(np.float32, copy=False)
            features = None
            if batch[0].features is not None:
                features = np.stack([r.features for r in batch]).astype(np.float32, copy=False)
            out = self.engine.infer(windows, features) if features is not None else self.engine.infer(windows)
        except Exception:  # noqa: BLE001 - a bad batch must not stop inference for everyone
            log.exception("engine %s failed on a batch of %d", self.engine.manifest.name, len(batch))
            self.stats.failed += len(batch)
            for r in batch:
                self.deliver(r, None)
            return
        self.stats.infer_s += time.perf_counter() - t
        self.stats.batches += 1
        self.stats.windows += len(batch)
        self.stats.batch_sizes.append(len(batch))
        for r, row in zip(batch, out, strict=True):
            self.deliver(r, row)
