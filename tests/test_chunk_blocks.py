"""A worker that fell behind processes a device's queued chunks as one block (:meth:`DeviceStream.push_many`, the
inbox's :class:`~edge.app._Chunks` items): the beats, classes, episodes and errors are those of chunk-by-chunk
processing, on a real record with the shipped engines, through a time jump and a sequence gap as well."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.app import EdgeConfig, Inbox, _Chunks, _Expire, _Result, load_plan
from edge.inference.batching import InferenceRequest
from edge.pipeline.device import DeviceStream, StreamConfig
from edge.pipeline.device_inference import REQUEST_TASK
from edge.pipeline.runner import answer
from edge.protocol import SamplesMessage
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.records import read_record

ENGINES = tuple(sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "engines").glob("*/manifest.json")))
#: Fields that say when (wall clock) or how late (device time: a block decides at its end) a message went out: they
#: differ by design. A pause's ``at`` is one: a block's silence is seen at the block's end.
TIMING = ("proc_ms", "wall_time", "latency_s", "at")


@pytest.fixture(scope="module")
def plan_engines():
    plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=ENGINES))
    if "beat-classify" not in engines:
        pytest.skip("no beat-classify engine in engines/")
    return plan, engines


@pytest.fixture(scope="module")
def chunks_119(data_dir) -> list[SamplesMessage]:
    """The first 60 s of MIT-BIH 119 (ventricular bigeminy from 20.9 s) as 40 ms chunks."""
    rec = read_record(data_dir / "mitdb" / "119")
    n = int(60 * rec.fs_hz)
    signal = rec.signal_mv[:n].astype(np.float32)
    step = int(round(0.04 * rec.fs_hz))
    return [SamplesMessage(i, rec.fs_hz, rec.leads, s / rec.fs_hz, signal[s:s + step])
            for i, s in enumerate(range(0, n, step))]


def _run(chunks: list[SamplesMessage], sizes: list[int], plan_engines) -> tuple[dict[str, list[dict]], DeviceStream]:
    """Push ``chunks`` in blocks of ``sizes``, answering every engine request after each push."""
    plan, engines = plan_engines
    stream = DeviceStream("blocks", StreamConfig(), plan)
    out: dict[str, list[dict]] = {}

    def collect(outputs) -> None:
        pending = list(outputs)
        while pending:
            for o in pending:
                out.setdefault(o.kind, []).append({k: v for k, v in o.payload.items() if k not in TIMING})
            pending = []
            for request in stream.take_requests():
                engine = engines.get(REQUEST_TASK[request.kind])
                pending += stream.on_result(request, None if engine is None else answer(request, engine))

    done = 0
    for size in sizes:
        collect(stream.push_many([(m, 0.0) for m in chunks[done:done + size]]))
        done += size
    assert done == len(chunks)
    collect(stream.flush())
    return out, stream


def _random_sizes(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while n:
        sizes.append(min(n, int(rng.integers(1, 26))))
        n -= sizes[-1]
    return sizes


def test_blocks_give_the_beats_classes_and_episodes_of_single_chunks(chunks_119, plan_engines) -> None:
    one, _ = _run(chunks_119, [1] * len(chunks_119), plan_engines)
    blocks, stream = _run(chunks_119, _random_sizes(len(chunks_119)), plan_engines)
    assert len(one["beats"]) >= 60
    assert sum(b["class"] == "V" for b in one["beats"]) >= 15  # the bigeminy's PVCs are there to compare
    assert blocks["beats"] == one["beats"]
    assert blocks["episodes"] == one["episodes"]
    assert any(e["type"] == "B" for e in one["episodes"])
    assert blocks.get("errors") == one.get("errors")
    assert stream.counters.chunks == len(chunks_119)
    assert stream.counters.samples == sum(m.n_samples for m in chunks_119)


def test_a_time_jump_and_a_gap_inside_a_block_restart_the_run_as_chunk_by_chunk(chunks_119, plan_engines) -> None:
    jumped = [replace(m, t0_s=m.t0_s + 5.0) if m.seq >= 500 else m for m in chunks_119]
    damaged = [m for m in jumped if m.seq != 900]  # chunk 900 never arrives: a sequence gap
    one, s1 = _run(damaged, [1] * len(damaged), plan_engines)
    blocks, s2 = _run(damaged, [25] * (len(damaged) // 25) + [len(damaged) % 25], plan_engines)
    codes = [e["code"] for e in one["errors"]]
    assert "time_jump" in codes and "missing_seq" in codes
    assert [e["code"] for e in blocks["errors"]] == codes
    assert s2.counters.restarts == s1.counters.restarts == 2
    assert blocks["beats"] == one["beats"]
    assert blocks["episodes"] == one["episodes"]


def _part(t: float) -> tuple[bytes, str | None, float]:
    return (b"payload", None, t)


def test_inbox_joins_a_devices_queued_chunks_but_never_past_a_control_item() -> None:
    inbox = Inbox(capacity=7, block=3)
    for t in range(2):
        assert inbox.put_chunk("a", _part(t), 0.01)
    assert inbox.put_chunk("b", _part(2), 0.01)
    inbox.put(_Result(InferenceRequest("a", "seg", (1, 0), np.zeros(1)), None))  # not a barrier
    assert inbox.put_chunk("a", _part(3), 0.01)
    assert inbox.put_chunk("a", _part(4), 0.01)  # "a"'s first item is full (3): a new one
    inbox.put(_Expire())  # a barrier: "a"'s next chunk comes after it
    assert inbox.put_chunk("a", _part(5), 0.01)
    assert inbox.put_chunk("b", _part(6), 0.01)
    assert inbox.chunks == 7 and inbox.queued("a") == 5 and inbox.queued("b") == 2
    assert not inbox.put_chunk("c", _part(7), 0.01)  # capacity counts chunks, not items
    items = [inbox.get() for _ in range(len(inbox))]
    kinds = [(i.device, [p[2] for p in i.parts]) if isinstance(i, _Chunks) else type(i).__name__ for i in items]
    assert kinds == [("a", [0, 1, 3]), ("b", [2]), "_Result", ("a", [4]), "_Expire", ("a", [5]), ("b", [6])]
    assert inbox.chunks == 0 and inbox.queued("a") == 0


def _get_timed(inbox: Inbox, n: int) -> list[tuple[float, object]]:
    """``n`` items from ``inbox`` in a thread, each with the monotonic time it was handed out."""
    got: list[tuple[float, object]] = []

    def take() -> None:
        for _ in range(n):
            item = inbox.get()
            got.append((time.monotonic(), item))

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "inbox.get() never handed the items out"
    return got


def test_inbox_holds_a_devices_chunks_for_hold_s_and_lets_results_pass() -> None:
    """With ``hold_s`` the chunks of a device that keeps up wait for its next ones (one block per hold instead of
    one per chunk), an engine result queued behind them goes first, and a full block goes at once."""
    hold = 0.4
    inbox = Inbox(capacity=100, block=4, hold_s=hold)
    t0 = time.monotonic()
    for _ in range(3):
        assert inbox.put_chunk("a", _part(time.monotonic()), 0.01)
    inbox.put(_Result(InferenceRequest("a", "seg", (1, 0), np.zeros(1)), None))
    got = _get_timed(inbox, 2)
    (t_result, first), (t_chunks, second) = got
    assert isinstance(first, _Result) and t_result - t0 < hold / 2  # passed the held chunks
    assert isinstance(second, _Chunks) and len(second.parts) == 3
    assert t_chunks - t0 >= hold - 0.01  # held until the first chunk was hold_s old
    for _ in range(4):  # a full block (4) is not held
        assert inbox.put_chunk("b", _part(time.monotonic()), 0.01)
    t1 = time.monotonic()
    ((t_full, full),) = _get_timed(inbox, 1)
    assert len(full.parts) == 4 and t_full - t1 < hold / 2
    assert inbox.chunks == 0 and inbox.queued("a") == inbox.queued("b") == 0


def test_inbox_releases_held_chunks_before_a_control_item_and_when_half_full() -> None:
    """A control item (expiry, stop, handover …) never waits behind held chunks and never passes them; nor does a
    producer wait for room because of the hold: at half the capacity held chunks go at once."""
    hold = 1.0
    inbox = Inbox(capacity=8, block=25, hold_s=hold)
    t0 = time.monotonic()
    assert inbox.put_chunk("a", _part(t0), 0.01)
    inbox.put(_Expire())
    got = _get_timed(inbox, 2)
    assert [type(i).__name__ for _, i in got] == ["_Chunks", "_Expire"]
    assert got[-1][0] - t0 < hold / 2
    for device in "abcd":  # 4 of capacity 8: half full
        assert inbox.put_chunk(device, _part(time.monotonic()), 0.01)
    t1 = time.monotonic()
    got = _get_timed(inbox, 4)
    assert [i.device for _, i in got] == list("abcd")
    assert got[0][0] - t1 < hold / 2  # at once, and the rest (under half) held again
    assert got[1][0] - t1 >= hold - 0.05


def test_inbox_wakes_a_waiting_worker_only_when_something_became_due() -> None:
    """The producer notifies the worker when the inbox was empty, the held head item filled up, or the inbox is half
    full; a chunk behind a held head changes nothing the worker waits for. Either way nothing is handed out late."""
    for hold in (0.0, 0.3):
        inbox = Inbox(capacity=100, block=3, hold_s=hold)
        got: list[tuple[float, _Chunks]] = []

        def take(box: Inbox = inbox, out: list = got) -> None:
            while sum(len(i.parts) for _, i in out) < 4:
                item = box.get()
                out.append((time.monotonic(), item))

        worker = threading.Thread(target=take, daemon=True)
        worker.start()
        time.sleep(0.1)  # the worker waits on an empty inbox
        t0 = time.monotonic()
        assert inbox.put_chunk("a", _part(t0), 0.01)
        assert inbox.put_chunk("b", _part(t0), 0.01)
        for _ in range(2):
            assert inbox.put_chunk("a", _part(t0), 0.01)
        worker.join(5)
        assert not worker.is_alive()
        if hold == 0:  # every chunk at once
            assert all(t - t0 < 0.15 for t, _ in got)
            continue
        (t_a, a), (t_b, b) = got  # "a" filled up: handed out at once, "b" at its hold
        assert (a.device, len(a.parts), b.device, len(b.parts)) == ("a", 3, "b", 1)
        assert t_a - t0 < 0.15 and hold - 0.01 <= t_b - t0 < hold + 0.25
