"""The simulator against a real mosquitto: exact samples in order, truth, pacing, faults, record selection, CLI."""

from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from edge_harness import Collector, running_edge
from typer.testing import CliRunner

from edge import protocol as proto
from edge.transport.broker import EmbeddedBroker, free_port
from edge.transport.mqtt import MqttSettings, make_client
from offline.records import read_annotations, read_record
from offline.scoring import BEAT_SYMBOLS, beat_samples
from simulator.cli import app
from simulator.replay import Replayer, ReplayError, loop_seams
from simulator.sources import SourceError, ptbxl_records, sample_dir, sample_records, wfdb_records
from simulator.truth import load_truth


class Subscriber:
    """Keeps every message (payload, MQTT 5 content type) per topic, in arrival order."""

    def __init__(self, settings: MqttSettings, topics: tuple[str, ...] = ("ecg/#", "sim/#")):
        self.messages: dict[str, list[tuple[bytes, str | None]]] = defaultdict(list)
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = make_client(settings, "test-sim-sub")
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.broker.host, settings.broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "subscriber could not subscribe"

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        content_type = getattr(msg.properties, "ContentType", None) if msg.properties else None
        with self._lock:
            self.messages[msg.topic].append((bytes(msg.payload), content_type))

    def get(self, topic: str) -> list[tuple[bytes, str | None]]:
        with self._lock:
            return list(self.messages.get(topic, []))

    def wait_count(self, topic: str, n: int, timeout_s: float = 10.0) -> list[tuple[bytes, str | None]]:
        deadline = time.monotonic() + timeout_s
        while len(self.get(topic)) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.get(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _settings(broker: EmbeddedBroker, protocol: str = "5", **kw: object) -> MqttSettings:
    return MqttSettings(broker.address, protocol=protocol, **kw)


# ---------------------------------------------------------------------------------------------- exact replay
@pytest.mark.parametrize(("fmt", "protocol"), [("json", "5"), ("binary", "5"), ("binary", "3.1.1")])
def test_mitdb_100_at_max_speed_arrives_once_in_order_with_the_record_samples(
    broker: EmbeddedBroker, data_dir: Path, fmt: str, protocol: str
) -> None:
    settings = _settings(broker, protocol)
    sub = Subscriber(settings)
    replayer = Replayer(wfdb_records(data_dir / "mitdb", names=["100"]), settings, speed=math.inf, chunk_ms=40,
                        fmt=fmt)
    summary = replayer.run(duration_s=20.0)
    device = replayer.device_ids[0]
    assert device == "sim-000"
    record = read_record(data_dir / "mitdb" / "100")
    n = 20 * 360
    chunk = 14  # 40 ms at 360 Hz, rounded to whole samples
    n_chunks = math.ceil(n / chunk)
    assert (summary.chunks, summary.samples, summary.dropped, summary.unacked) == (n_chunks, n, 0, 0)
    assert summary.device_seconds == pytest.approx(20.0)
    received = sub.wait_count(proto.samples_topic(device), n_chunks)
    sub.close()
    want_type = {"json": proto.CONTENT_TYPE_JSON, "binary": proto.CONTENT_TYPE_BINARY}[fmt] if protocol == "5" else None
    assert {ctype for _, ctype in received} == {want_type}
    msgs = [proto.decode_samples(payload, content_type=ctype) for payload, ctype in received]
    assert [m.seq for m in msgs] == list(range(n_chunks))
    assert [m.t0_s for m in msgs] == pytest.approx([k * chunk / 360 for k in range(n_chunks)])
    assert all(m.fs_hz == 360 and m.leads == ("MLII", "V5") for m in msgs)
    got = np.concatenate([m.data_mv for m in msgs])
    tol = 1e-4 + 1e-6 if fmt == "json" else 1 / 200  # JSON: 4 decimals; binary: 1 LSB at 200 adu/mV
    assert got.shape == (n, 2)
    assert np.abs(got - record.signal_mv[:n]).max() <= tol

    truths = sub.get(proto.truth_topic(device))
    assert len(truths) == 1
    truth = json.loads(truths[0][0])
    ref = beat_samples(*read_annotations(data_dir / "mitdb" / "100", "atr"))
    assert truth["record"] == "100" and truth["fs"] == 360 and truth["leads"] == ["MLII", "V5"]
    assert truth["t0"] == 0 and truth["loop"] == 0 and truth["beats_from"] == "atr"
    assert truth["beats"]["sample"] == ref.tolist() and len(ref) == 2273
    assert truth["beats"]["time"] == pytest.approx((ref / 360).tolist(), abs=1e-6)
    assert truth["beats"]["symbol"].count("V") == 1 and truth["beats"]["symbol"].count("A") == 33


def test_loop_keeps_seq_and_device_time_increasing_and_repeats_truth(broker: EmbeddedBroker) -> None:
    settings = _settings(broker)
    sub = Subscriber(settings)
    source = [s for s in sample_records() if s.name == "mitdb100"]
    replayer = Replayer(source, settings, speed=math.inf, chunk_ms=100, loop=True)
    summary = replayer.run(duration_s=150.0)  # 2.5+ passes over the 60 s excerpt
    device = replayer.device_ids[0]
    truths = [json.loads(p) for p, _ in sub.wait_count(proto.truth_topic(device), 3)]
    msgs = [proto.decode_samples(p, content_type=c) for p, c in sub.wait_count(proto.samples_topic(device),
                                                                                 summary.chunks)]
    sub.close()
    record = read_record(source[0].path)
    beats = read_annotations(source[0].path)[0][beat_samples_mask(source[0].path)]
    first, end = loop_seams(beats, 21600)
    assert (first, end) == ((77 + 370) // 2, (21131 + 21423) // 2)  # halfway between the first two, last two beats
    assert tuple(beats[:2]) == (77, 370) and tuple(beats[-2:]) == (21131, 21423)
    assert summary.truth_messages == 3 and summary.samples == 150 * 360
    assert [m.seq for m in msgs] == list(range(summary.chunks))
    t0 = np.array([m.t0_s for m in msgs])
    n = np.array([m.n_samples for m in msgs])
    assert np.allclose(t0[1:], t0[:-1] + n[:-1] / 360, atol=1e-9)  # contiguous: no time jump at the seams
    pass_len = (end - first) / 360
    assert [(t["span"]["first"], t["span"]["end"], t["loop"]) for t in truths] == [(0, end, 0), (first, end, 1),
                                                                                    (first, end, 2)]
    assert [t["span"]["start"] for t in truths] == pytest.approx([0.0, end / 360, end / 360 + pass_len])
    assert [t["t0"] for t in truths] == pytest.approx([0.0, (end - first) / 360, (end - first) / 360 + pass_len])
    played = np.concatenate([m.data_mv for m in msgs])
    assert np.allclose(played[end:end + 3600], record.signal_mv[first:first + 3600], atol=1e-4)  # pass 2 = record
    assert np.allclose(played[:end - 36], record.signal_mv[:end - 36], atol=1e-4)  # untouched up to the ramp
    assert np.abs(played[end - 1] - record.signal_mv[first]).max() < 0.05  # the ramp meets the seam level
    second = truths[1]["beats"]
    assert min(second["sample"]) >= first and max(second["sample"]) < end
    assert second["time"] == pytest.approx([truths[1]["t0"] + s / 360 for s in second["sample"]], abs=1e-6)


def beat_samples_mask(path: Path) -> np.ndarray:
    """Which annotations of ``path``.atr are beats."""
    return np.array([s in BEAT_SYMBOLS for s in read_annotations(path)[1]])


def test_looping_through_the_edge_makes_no_false_beat_pause_or_restart(broker: EmbeddedBroker) -> None:
    """Three passes of each 10 s LUDB sample record through a real edge: every RR is one of the record's own
    (reference RR range ± 40 ms), also across the seams; no pause episode, no time jump, no restart. Before the seam
    fix the end glued to the start made an RR 0.768 s beat on record 2's seam (and others elsewhere)."""
    sources = [s for s in sample_records() if s.dataset == "wfdb" and s.path.parent.name == "ludb"]
    with running_edge(broker) as (_, settings):
        collector = Collector(settings, topics=tuple(proto.output_subscription(k)
                                                     for k in ("beats", "episodes", "errors")))
        replayer = Replayer(sources, settings, devices=len(sources), speed=math.inf, loop=True)
        summary = replayer.run(duration_s=30.0)
        devices = replayer.device_ids
        deadline = time.monotonic() + 20

        def last_beat_s(device: str) -> float:
            got = collector.get(proto.beats_topic(device))
            return got[-1]["time"] if got else 0.0

        while time.monotonic() < deadline and min(last_beat_s(d) for d in devices) < 28:
            time.sleep(0.2)
        time.sleep(1.0)
        collector.close()
    assert summary.samples == len(sources) * 30 * 500
    seen = {}
    for source, device in zip(sources, devices, strict=True):
        truth = load_truth(source, read_record(source.path))
        ref_rr = np.diff(truth.reference_beats()) / truth.fs_hz
        beats = collector.get(proto.beats_topic(device))
        rr = np.array([b["rr_s"] for b in beats if b["rr_s"] is not None])
        seen[source.name] = (len(beats), rr.min(), rr.max())
        assert len(beats) >= 30 / ref_rr.max() - 2, (source.name, len(beats))
        assert rr.min() >= max(0.3, ref_rr.min() - 0.04) and rr.max() <= ref_rr.max() + 0.04, (source.name, seen)
        assert [b["rr_s"] is None for b in beats].count(True) == 1  # one run: the seams are no restarts
        assert not [e for e in collector.get(proto.episodes_topic(device)) if e["type"] == "PAUSE"]
        assert not [e["code"] for e in collector.get(proto.errors_topic(device))]


def test_devices_are_assigned_records_round_robin(broker: EmbeddedBroker) -> None:
    settings = _settings(broker)
    sub = Subscriber(settings, topics=("sim/#",))
    sources = sample_records()[:2]
    replayer = Replayer(sources, settings, devices=5, speed=math.inf, device_prefix="rr", leads=["II"],
                        device_names="record")
    assert replayer.device_ids == ["rr-1", "rr-2", "rr-1-2", "rr-2-2", "rr-1-3"]
    summary = replayer.run(duration_s=1.0)
    assert summary.chunks == 5 * 25 and summary.device_seconds == pytest.approx(1.0)
    for device, record in zip(replayer.device_ids, ["1", "2", "1", "2", "1"], strict=True):
        (payload, _), = sub.wait_count(proto.truth_topic(device), 1)
        truth = json.loads(payload)
        assert (truth["device"], truth["record"], truth["leads"]) == (device, record, ["II"])
        assert {w["lead"] for w in truth["waves"]} == {"II"}  # waves of the replayed lead only
    sub.close()
    assert Replayer(sources, settings, devices=3).device_ids == ["sim-000", "sim-001", "sim-002"]


def test_bad_replay_parameters_raise_one_line_errors(broker: EmbeddedBroker, data_dir: Path) -> None:
    settings = _settings(broker)
    mitdb = wfdb_records(data_dir / "mitdb", names=["100"])
    for kwargs in ({"speed": 0}, {"fmt": "xml"}, {"devices": 0}, {"chunk_ms": 0}, {"device_prefix": "a/b"}):
        with pytest.raises(ReplayError):
            Replayer(mitdb, settings, **kwargs)
    with pytest.raises(ReplayError, match="no lead"):
        Replayer(mitdb, settings, leads=["V9"]).run()
    with pytest.raises(ReplayError, match="cannot reach"):
        Replayer(mitdb, MqttSettings(EmbeddedBroker().address)).run()  # nothing listens on a fresh free port
    port = free_port()
    with EmbeddedBroker(port=port, prefer="mosquitto-only",
                        extra_config=f"listener {port} 127.0.0.1\nallow_anonymous false\n") as closed:
        with pytest.raises(ReplayError, match="refused"):
            Replayer(mitdb, MqttSettings(closed.address, username="nobody", password="x")).run()


# ---------------------------------------------------------------------------------------------- pacing
def test_real_time_pacing_is_close_to_the_wall_clock(broker: EmbeddedBroker) -> None:
    settings = _settings(broker)
    t = time.monotonic()
    summary = Replayer(sample_records()[:1], settings, speed=1.0).run(duration_s=2.0)
    elapsed = time.monotonic() - t
    assert 1.8 <= elapsed <= 3.0, elapsed
    assert summary.device_seconds == pytest.approx(2.0) and summary.max_lag_s < 0.5
    t = time.monotonic()
    Replayer(sample_records()[4:5], settings, speed=4.0).run(duration_s=8.0)
    assert 1.8 <= time.monotonic() - t <= 3.0


def test_one_thread_drives_200_devices_in_real_time(broker: EmbeddedBroker) -> None:
    settings = _settings(broker)
    sources = sample_records()[4:]  # the two 2-lead MIT-BIH excerpts
    t = time.monotonic()
    summary = Replayer(sources, settings, devices=200, speed=1.0, fmt="binary").run(duration_s=2.0)
    elapsed = time.monotonic() - t
    assert summary.chunks == 200 * math.ceil(720 / 14) and summary.dropped == 0
    # at real time it cannot finish early; the bound is loose on purpose (a loaded 2-core CI runner took 3.98 s with
    # the broker on the same cores): the simulator's speed is measured in bench/, this only says it keeps pace
    assert elapsed >= 1.9 and elapsed <= 6.0, \
        f"200 devices × 2 s at real time took {elapsed:.2f} s (max lag {summary.max_lag_s:.2f} s)"


def test_stop_event_ends_a_looping_replay(broker: EmbeddedBroker) -> None:
    replayer = Replayer(sample_records(), _settings(broker), devices=3, speed=1.0, loop=True)
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_once_playing() -> None:  # 0.5 s after the first chunk went out (connecting takes longer on a slow box)
        deadline = time.monotonic() + 20
        while replayer.snapshot().chunks == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=stop_once_playing, daemon=True).start()
    summary = replayer.run(stop_event=stop)
    assert stopped_at and time.monotonic() - stopped_at[0] < 1.5  # stopped when told, not at a record's end
    # it played, in real time (no more device time than wall time)
    assert 0.0 < summary.device_seconds <= summary.elapsed_s + 0.05 and summary.unacked == 0


def test_broker_restart_bounded_queue_counts_drops_and_reconnects() -> None:
    with EmbeddedBroker(prefer="mosquitto-only") as first:
        port = first.port
        settings = MqttSettings(first.address, max_queued=50)
        replayer = Replayer(sample_records()[4:5], settings, speed=20.0, loop=True)
        stop = threading.Event()
        worker = threading.Thread(target=replayer.run, kwargs={"stop_event": stop, "duration_s": 300.0})
        worker.start()
        time.sleep(0.5)
    try:
        time.sleep(1.5)  # broker away: 20× real time at 25 chunks/s → ~750 chunks, at most 50 queued
        with EmbeddedBroker(port=port, prefer="mosquitto-only") as second:
            sub = Subscriber(MqttSettings(second.address))
            deadline = time.monotonic() + 15
            while replayer.snapshot().reconnects < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            got = sub.wait_count(proto.samples_topic("sim-000"), 20)
            stop.set()
            worker.join(15)
            sub.close()
    finally:
        stop.set()
    summary = replayer.snapshot()
    assert summary.reconnects >= 1 and summary.dropped > 0, summary
    assert len(got) >= 20, "no samples after the broker came back"
    seqs = [proto.decode_samples(p, content_type=c).seq for p, c in got]
    assert seqs == sorted(seqs)


# ---------------------------------------------------------------------------------------------- truth
def test_ludb_truth_waves_match_the_annotation_files(data_dir: Path) -> None:
    source = wfdb_records(data_dir / "ludb", names=["1"])[0]
    truth = load_truth(source, read_record(source.path))
    assert truth.waves_from == "ludb" and truth.beats_from is None and len(truth.beat_samples) == 0
    lead_ii = [w for w in truth.waves if w.lead == "II"]
    assert [w.wave for w in lead_ii].count("QRS") == 6
    assert sum(w.wave == "P" for w in lead_ii) == 5 and sum(w.wave == "T" for w in lead_ii) == 5
    qrs = next(w for w in lead_ii if w.wave == "QRS")
    assert (qrs.on_s, qrs.peak_s, qrs.off_s) == pytest.approx((644 / 500, 662 / 500, 682 / 500))
    assert {w.lead for w in truth.waves} == set(truth.leads) and len(truth.leads) == 12
    msg = truth.message("dev", t0_s=10.0, loop=1)
    first = next(w for w in msg["waves"] if w["lead"] == "II" and w["wave"] == "QRS")
    assert (first["on"], first["peak"], first["off"]) == pytest.approx((11.288, 11.324, 11.364))
    json.dumps(msg, allow_nan=False)
    # a peak without an adjacent boundary keeps None there (LUDB leaves some open)
    every = [w for w in truth.waves if w.on_s is None or w.off_s is None]
    assert all(w.peak_s is not None for w in every)


def test_qtdb_truth_has_atr_beats_and_q1c_waves(data_dir: Path) -> None:
    source = wfdb_records(data_dir / "qtdb", names=["sel100"])[0]
    truth = load_truth(source, read_record(source.path))
    assert truth.beats_from == "atr" and len(truth.beat_samples) == 1134
    assert truth.waves_from == "q1c" and {w.lead for w in truth.waves} == {None}
    assert sum(w.wave == "QRS" for w in truth.waves) == 30 and sum(w.wave == "P" for w in truth.waves) == 30
    t_open = [w for w in truth.waves if w.wave == "T" and w.on_s is None]
    assert t_open and all(w.off_s is not None for w in t_open)  # QTDB marks T peaks and ends, not T onsets


def test_mitdb_truth_carries_reference_episodes_and_the_alarms_they_imply(data_dir: Path) -> None:
    source = wfdb_records(data_dir / "mitdb", names=["205"])[0]
    msg = load_truth(source, read_record(source.path)).message("dev", t0_s=100.0)
    vt = [e for e in msg["episodes"] if e["type"] == "VT"]
    assert msg["record"] == "205" and len(vt) == 6 and len(msg["episodes"]) == 6  # (N stretches are no episodes
    assert vt[0]["start"] == pytest.approx(100 + 107561 / 360, abs=1e-5) and vt[0]["end"] > vt[0]["start"]
    # a VT episode implies the vt alarm only when its V run meets the alarm's definition (>= 5 V at > 100 bpm),
    # dated to the beat where it did: 3 of 205's 6 (the others are shorter or slower runs)
    assert [a["type"] for a in msg["alarms"]] == ["vt"] * 3 and all(a["priority"] == "high" for a in msg["alarms"])
    for a, e in zip(msg["alarms"], [vt[0], vt[1], vt[3]], strict=True):
        assert e["start"] < a["time"] <= e["end"]
    bigeminy = load_truth(*_sample("mitdb119")).message("dev", t0_s=0.0)
    assert {e["type"] for e in bigeminy["episodes"]} == {"B"} and bigeminy["alarms"] == []
    assert bigeminy["episodes"][0]["start"] == 0.0


def _sample(name: str) -> tuple:
    source = next(s for s in sample_records() if s.name == name)
    return source, read_record(source.path)


# ---------------------------------------------------------------------------------------------- sources
def test_ptbxl_selection_by_id_fold_count_and_labels(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = data_dir / "ptbxl"
    assert [s.info["ecg_id"] for s in ptbxl_records(root)] == list(range(6000, 6010))
    picked = ptbxl_records(root, ids=[6002, 6001])
    assert [s.name for s in picked] == ["06002_hr", "06001_hr"]
    assert picked[0].labels == ("NORM", "CD") and picked[1].labels == ("STTC",)
    assert picked[0].path == root / "records500" / "06000" / "06002_hr" and picked[0].dataset == "ptbxl"
    assert [s.info["ecg_id"] for s in ptbxl_records(root, folds=[10, 4])] == [6000, 6002, 6004, 6006]
    assert [s.info["ecg_id"] for s in ptbxl_records(root, folds=[10, 4], count=3)] == [6000, 6002, 6004]
    with caplog.at_level(logging.WARNING, logger="simulator.sources"):
        fallback = ptbxl_records(root, ids=[6000], rate=100)
    assert fallback[0].path.parent.parent.name == "records500" and "records100" in caplog.text
    with pytest.raises(SourceError, match="6999"):
        ptbxl_records(root, ids=[6000, 6999])
    with pytest.raises(SourceError, match="does not exist"):
        ptbxl_records(root / "nope")
    with pytest.raises(SourceError, match="no PTB-XL record"):
        ptbxl_records(root, folds=[1])
    with pytest.raises(SourceError, match="rate"):
        ptbxl_records(root, rate=250)


def test_ptbxl_truth_carries_labels(data_dir: Path) -> None:
    source = ptbxl_records(data_dir / "ptbxl", ids=[6002])[0]
    record = read_record(source.path, leads=["II", "V1"])
    msg = load_truth(source, record).message("p", 0.0)
    assert msg["labels"] == ["NORM", "CD"] and msg["leads"] == ["II", "V1"] and msg["fs"] == 500
    assert msg["info"]["ecg_id"] == 6002 and msg["info"]["strat_fold"] == 4
    assert msg["beats"] == {"time": [], "sample": [], "symbol": []} and msg["waves"] == []


def test_wfdb_folders_with_and_without_records_file(data_dir: Path, tmp_path: Path) -> None:
    ludb = wfdb_records(data_dir / "ludb", count=3)
    assert [s.name for s in ludb] == ["1", "2", "3"] and ludb[0].path == data_dir / "ludb" / "data" / "1"
    assert [s.name for s in wfdb_records(data_dir / "ludb", names=["data/4", "2"])] == ["4", "2"]
    # no RECORDS file: headers in data/ are found (only their presence counts here), in natural order
    (tmp_path / "db" / "data").mkdir(parents=True)
    for name in ("10", "2", "1"):
        (tmp_path / "db" / "data" / f"{name}.hea").write_text("")
    assert [s.name for s in wfdb_records(tmp_path / "db")] == ["1", "2", "10"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no WFDB records"):
        wfdb_records(tmp_path / "empty")
    with pytest.raises(SourceError, match="no record 999"):
        wfdb_records(data_dir / "mitdb", names=["999"])


def test_bundled_sample_is_small_attributed_and_matches_its_sources(data_dir: Path) -> None:
    folder = sample_dir()
    files = [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 1.5e6
    source_md = (folder / "SOURCE.md").read_text()
    for needle in ("ODC-By 1.0", "Goldberger", "Kalyakulina", "Moody", "make_sample.py"):
        assert needle in source_md
    sources = sample_records()
    assert [s.name for s in sources] == ["1", "2", "8", "114", "mitdb100", "mitdb119"]
    excerpt = read_record(sources[5].path)
    original = read_record(data_dir / "mitdb" / "119")
    start = 18 * 60 * 360
    assert excerpt.n_samples == 60 * 360
    assert np.array_equal(excerpt.signal_mv, original.signal_mv[start:start + 60 * 360])
    truth = load_truth(sources[5], excerpt)
    ref = beat_samples(*read_annotations(data_dir / "mitdb" / "119", "atr"))
    ref = ref[(ref >= start) & (ref < start + 60 * 360)] - start
    assert truth.beat_samples.tolist() == ref.tolist() and truth.beat_symbols.count("V") == 20
    ludb = load_truth(sources[0], read_record(sources[0].path))
    assert ludb.waves_from == "ludb" and len(ludb.waves) > 100


# ---------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args", [
    ["replay", "wfdb", "/no/such/folder"],
    ["replay", "wfdb", "{mitdb}", "--records", "999"],
    ["replay", "ptbxl"],
    ["replay", "ptbxl", "--data", "{ptbxl}", "--ids", "1234"],
    ["replay", "ptbxl", "--data", "{ptbxl}", "--fold", "x"],
    ["replay", "sample", "--broker", "localhost:http"],
    ["replay", "sample", "--broker", "127.0.0.1:{dead}"],
    ["replay", "sample", "--speed", "fast"],
    ["replay", "sample", "--format", "xml"],
    ["replay", "sample", "--leads", "V9", "--broker", "127.0.0.1:{dead}"],
    ["replay", "sample", "--mqtt-version", "4"],
    ["replay", "sample", "--password-file", "/no/such/file"],
    ["list", "ptbxl", "--data", "{ptbxl}", "--rate", "250"],
])
def test_cli_bad_input_is_one_line_and_exit_code_2(data_dir: Path, args: list[str]) -> None:
    dead = EmbeddedBroker().port  # a free port nothing listens on
    args = [a.format(mitdb=data_dir / "mitdb", ptbxl=data_dir / "ptbxl", dead=dead) for a in args]
    result = CliRunner(env={"BEATSSL_PTBXL": None}).invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def test_cli_replays_and_lists(broker: EmbeddedBroker, data_dir: Path) -> None:
    sub = Subscriber(_settings(broker), topics=("ecg/#",))
    result = CliRunner().invoke(app, ["replay", "wfdb", str(data_dir / "mitdb"), "--records", "100,101",
                                      "--broker", str(broker.address), "--devices", "2", "--speed", "max",
                                      "--duration-s", "2", "--format", "binary", "--device-prefix", "cli"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["chunks"] == 2 * math.ceil(720 / 14) and summary["dropped"] == 0
    assert len(sub.wait_count(proto.samples_topic("cli-001"), summary["chunks"] // 2)) == summary["chunks"] // 2
    sub.close()
    listed = CliRunner(env={"BEATSSL_PTBXL": str(data_dir / "ptbxl")}).invoke(app, ["list", "ptbxl", "--fold", "10"])
    assert listed.exit_code == 0
    assert [line.split("\t")[:4] for line in listed.stdout.strip().splitlines()] == [
        ["06000_hr", "ecg_id=6000", "fold=10", "NORM"], ["06004_hr", "ecg_id=6004", "fold=10", "NORM"]]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_cleanly_on_ctrl_c_and_sigterm(broker: EmbeddedBroker, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from simulator.cli import app; app()", "replay", "sample", "--devices", "2",
         "--broker", str(broker.address)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sub = Subscriber(_settings(broker), topics=("ecg/#",))
    sub.wait_count(proto.samples_topic("sim-001"), 5)  # the replay is under way
    sub.close()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["devices"] == 2 and summary["chunks"] >= 10 and summary["unacked"] == 0
    assert "Traceback" not in err


def test_simulator_module_runs_as_the_console_script() -> None:
    """``python -m simulator.cli`` is the ``simulator`` command, not a silent exit 0 (it was, 2026-12-04)."""
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "replay", "wfdb", "--help"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--devices" in done.stdout, done.stdout + done.stderr
    bad = subprocess.run([sys.executable, "-m", "simulator.cli", "replay", "nosuch"], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "nosuch" in bad.stderr
