"""``beatssl-edge run --processes 2`` through a real mosquitto: real worker processes under the supervisor.

- 4 devices (MIT-BIH 100 101 105 106, 60 s at max speed): every device's beats equal the offline detector's, each
  device is held by exactly one worker process (the one of its CRC-32 share), the node's health sums the workers',
  and SIGTERM right after the last chunk exits 0 with nothing lost (the shutdown flush puts out the last beats).
- kill -9 of one worker mid-stream: the supervisor restarts it (health: restarts 1, online again), its devices go
  on with the beats of the rest of the record (sample numbers on the device clock), the other worker's devices lose
  nothing, and each resumed device's status states the gap (``resumed_by`` restart): equal, within one chunk, to
  the gap its beats show (:func:`check_resume`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from edge_harness import Collector

from edge import protocol as proto
from edge.detection.beats import detect_record
from edge.supervisor import worker_node
from edge.transport.mqtt import MqttSettings
from offline.records import read_record
from simulator.replay import Replayer
from simulator.sources import wfdb_records

REPO = Path(__file__).resolve().parent.parent
RECORDS = ["100", "101", "105", "106"]  # named by record: two per CRC-32 share of 2


def start_run(broker_port: int, *args: str) -> subprocess.Popen:
    """``python -m beatssl.cli run`` as its own process (so signals and kill -9 are real)."""
    return subprocess.Popen([sys.executable, "-m", "beatssl.cli", "run", "--broker", f"127.0.0.1:{broker_port}",
                             "--no-engines", "--stale-after-s", "2", "--log-level", "warning", *args], cwd=REPO)


def offline_beats(path: Path, seconds: float) -> list[int]:
    rec = read_record(path)
    return [b.sample for b in detect_record(rec.signal_mv[: int(seconds * rec.fs_hz)], rec.fs_hz,
                                            chunk_samples=int(0.04 * rec.fs_hz))]


def check_resume(statuses: list[dict], beats: list[dict], signal_mv: np.ndarray, fs: float, by: str,
                 until_s: float | None = None) -> float:
    """Check the first resume ``by`` stated on a device's statuses against its beats; return the stated gap (s).

    The beats show both ends of the gap: the previous owner had processed the signal up to its last beat's ``time +
    latency_s`` (the sample it had when it decided that beat, which its retained status said), and the new owner
    started at ``resumed_at_s`` iff its beats are exactly the offline detector's on the signal from there (checked
    up to ``until_s``, s of device time; None: the end). The stated ``resume_gap_s`` must equal the signal between
    the two, within one chunk (40 ms).
    """
    resumed = [s for s in statuses if s.get("resumed_by") == by]
    assert resumed, [(s["state"], s.get("resumed_by")) for s in statuses]
    at_s = resumed[0]["resumed_at_s"]
    first = round(at_s * fs)
    end = len(signal_mv) if until_s is None else round(until_s * fs)
    old = [b for b in beats if b["sample"] < first]
    new = [b["sample"] for b in beats if first <= b["sample"] < end]
    offline = [first + b.sample for b in detect_record(signal_mv[first:], fs, chunk_samples=round(0.04 * fs))]
    assert new == [b for b in offline if b < end], (at_s, new[:3], offline[:3])
    beats_gap_s = at_s - (old[-1]["time"] + old[-1]["latency_s"] + 1.0 / fs)
    stated_s = resumed[0]["resume_gap_s"]
    print(f"{statuses[0]['device']}: resumed by {by} at {at_s:.3f} s, stated gap {stated_s:.3f} s, beats show "
          f"{beats_gap_s:.3f} s")
    assert abs(stated_s - beats_gap_s) <= 0.04, (stated_s, beats_gap_s)
    later = statuses[statuses.index(resumed[0]):]
    assert all(s["t_last_s"] is not None for s in later)  # every status from the resume on says how far it got
    return stated_s


def node_health(col: Collector, node: str) -> dict:
    msgs = col.get(proto.health_topic(node))
    return msgs[-1] if msgs else {}


def test_two_processes_share_four_devices_and_sigterm_loses_nothing(broker, data_dir) -> None:
    settings = MqttSettings(broker.address)
    col = Collector(settings)
    # stale only after 60 s: the last beats of each device can only come from the SIGTERM flush
    run = start_run(broker.port, "--processes", "2", "--node", "box", "--stale-after-s", "60")
    try:
        assert col.wait_for(lambda: node_health(col, "box").get("state") == "online", 60), node_health(col, "box")
        records = wfdb_records(data_dir / "mitdb", names=RECORDS)
        replayer = Replayer(records, settings, devices=4, speed=float("inf"), chunk_ms=40, device_prefix="proc",
                            device_names="record")
        replayer.run(duration_s=60.0)
        devices = replayer.device_ids
        shares = {k: sorted(d for d in devices if proto.device_hash(d) % 2 == k) for k in range(2)}
        assert all(len(v) == 2 for v in shares.values()), shares
        # one process per device: worker k holds exactly the devices of share k (its health, every 5 s)
        assert col.wait_for(lambda: all(node_health(col, worker_node("box", k)).get("devices") == 2
                                        for k in range(2)), 20)
        assert all(node_health(col, worker_node("box", k))["partition"] == [k, 2] for k in range(2))
        assert col.wait_for(lambda: node_health(col, "box").get("devices") == 4, 10)
        assert node_health(col, "box")["workers"][worker_node("box", 0)]["devices"] == 2
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
    for i, d in enumerate(devices):
        got = [m["sample"] for m in col.get(proto.beats_topic(d))]
        assert got == offline_beats(records[i].path, 60.0), d
        assert col.get(proto.status_topic(d))[-1]["state"] == "stale"  # flushed by the shutdown
    assert node_health(col, "box")["state"] == "offline"
    col.close()


def test_killed_worker_is_restarted_and_its_devices_go_on(broker, data_dir) -> None:
    settings = MqttSettings(broker.address)
    col = Collector(settings)
    run = start_run(broker.port, "--processes", "2", "--node", "box")
    seconds = 90.0
    try:
        assert col.wait_for(lambda: node_health(col, "box").get("state") == "online", 60)
        records = wfdb_records(data_dir / "mitdb", names=RECORDS)
        replayer = Replayer(records, settings, devices=4, speed=6.0, chunk_ms=40, device_prefix="kill",
                            device_names="record")
        feeder = threading.Thread(target=replayer.run, kwargs={"duration_s": seconds})
        feeder.start()
        time.sleep(4.0)  # ~24 s of signal in
        victim = node_health(col, "box")["workers"][worker_node("box", 0)]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert col.wait_for(lambda: node_health(col, "box").get("restarts") == 1
                            and node_health(col, "box").get("state") == "online", 60), node_health(col, "box")
        restarted = node_health(col, "box")["workers"][worker_node("box", 0)]
        assert restarted["pid"] != victim and restarted["last_exit"] == -signal.SIGKILL
        feeder.join(60)
        devices = replayer.device_ids
        assert col.wait_for(lambda: all(any(m["state"] == "stale" for m in col.get(proto.status_topic(d)))
                                        for d in devices), 30)
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
    for i, d in enumerate(devices):
        rec = read_record(records[i].path)
        expected = offline_beats(records[i].path, seconds)
        got = [m["sample"] for m in col.get(proto.beats_topic(d))]
        assert len(set(got)) == len(got), d
        if proto.device_hash(d) % 2:  # the surviving worker's devices lose nothing
            assert got == expected, d
            continue
        # the killed worker's devices: beats on to the end of the record, numbered on the device clock (after the
        # restart the detector starts a new run, so a beat may sit a sample or two off the offline one)
        near = np.asarray(got)
        found = [np.abs(near - e).min() <= 0.05 * rec.fs_hz for e in expected]
        missing = [e / rec.fs_hz for e, ok in zip(expected, found, strict=True) if not ok]
        hole_s = missing[-1] - missing[0] if missing else 0.0
        print(f"{d}: {len(missing)} of {len(expected)} beats missing, within {hole_s:.2f} s of signal "
              f"({missing[0] if missing else '-'} s on)")
        assert got[-1] >= expected[-1] - 2 * rec.fs_hz, d
        assert np.diff(near).min() > 0.2 * rec.fs_hz, d  # no beat twice
        assert len(near) <= len(expected) + 1
        assert hole_s <= 5.0 and len(missing) <= 8, (d, missing)
        signal_mv = rec.signal_mv[: int(seconds * rec.fs_hz)]
        assert check_resume(col.get(proto.status_topic(d)), col.get(proto.beats_topic(d)), signal_mv, rec.fs_hz,
                            "restart") <= 5.0
    col.close()
