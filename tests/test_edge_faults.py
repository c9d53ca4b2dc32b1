"""Bad input and faults against a real mosquitto: each gets a clear message on errors and a counter; the edge keeps
running and the other devices are unaffected."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from edge_harness import Collector, Feeder, running_edge

from edge import protocol as proto
from edge.detection.beats import detect_record
from offline.records import read_record


@pytest.fixture(scope="module")
def mitdb100(data_dir):
    rec = read_record(data_dir / "mitdb" / "100")
    n = int(20 * rec.fs_hz)
    return rec.signal_mv[:n], rec.fs_hz, rec.leads


def _codes(col: Collector, device: str) -> list[str]:
    return [m["code"] for m in col.get(proto.errors_topic(device))]


def test_good_device_unaffected_by_bad_payloads(broker, mitdb100) -> None:
    sig, fs, leads = mitdb100
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        bad = [
            b"{not json",
            json.dumps({"v": 9, "seq": 0, "fs": fs, "leads": ["I"], "data": [[0]]}).encode(),
            json.dumps({"v": 1, "seq": 1, "fs": fs, "leads": ["I", "II"], "data": [[0.1]]}).encode(),
            json.dumps({"v": 1, "seq": 2, "fs": fs, "leads": ["I"], "data": [[0.1, float("nan")]]}).encode(),
            json.dumps({"v": 1, "seq": 3, "fs": fs, "leads": ["I"], "data": [[0.1, 900.0]]}).encode(),
            b"{" + b" " * (300 * 1024) + b"}",
        ]
        for payload in bad:
            feed.raw("broken", payload)
            time.sleep(1.05)  # errors of one code are rate-limited to one message per second; codes differ anyway
        feed.send("good", feed.chunks(sig, fs, leads))
        expected = detect_record(sig, fs, chunk_samples=int(0.04 * fs))
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("good"))) >= len(expected) - 2, 20)
        codes = _codes(col, "broken")
        assert codes == ["malformed", "unknown_version", "lead_count", "non_finite", "amplitude", "oversize"]
        assert all(m["message"] and m["count"] == 1 for m in col.get(proto.errors_topic("broken")))
        assert _codes(col, "good") == []
        good = [m["sample"] for m in col.get(proto.beats_topic("good"))]
        assert good == [b.sample for b in expected][: len(good)]
        counters = edge.devices()["broken"].counters.errors
        assert counters == {"malformed": 1, "unknown_version": 1, "lead_count": 1, "non_finite": 1,
                            "amplitude": 1, "oversize": 1}
        col.close()
        feed.close()


def test_sequence_faults_are_counted_and_reported(broker, mitdb100) -> None:
    sig, fs, leads = mitdb100
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig[: int(8 * fs)], fs, leads)
        order = list(range(0, 50))
        order += [50, 50]                     # duplicate
        order += [52, 51]                     # swapped: reordered, not lost
        order += list(range(53, 100))
        order += list(range(110, len(msgs)))  # 10 chunks never arrive
        feed.send("seqdev", [msgs[i] for i in order])
        assert col.wait_for(lambda: "missing_seq" in _codes(col, "seqdev"), 10)
        c = edge.devices()["seqdev"].counters
        assert c.duplicates == 1 and c.reordered == 1 and c.missing_chunks == 10
        assert "duplicate_seq" in _codes(col, "seqdev")
        msg = next(m for m in col.get(proto.errors_topic("seqdev")) if m["code"] == "missing_seq")
        assert "100..109" in msg["message"]
        # beats keep coming after the gap, on the device's own sample numbering
        gap_end = int(round(msgs[110].t0_s * fs))
        assert col.wait_for(lambda: any(m["sample"] > gap_end for m in col.get(proto.beats_topic("seqdev"))), 10)
        col.close()
        feed.close()


def test_flat_line_fs_change_and_vanishing_device(broker, mitdb100) -> None:
    sig, fs, leads = mitdb100
    with running_edge(broker, stale_after_s=1.5) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        flat = np.zeros((int(3 * fs), len(leads)), np.float32)
        feed.send("flat", feed.chunks(flat, fs, leads))
        first = feed.chunks(sig[: int(4 * fs)], fs, leads)
        resampled = sig[int(4 * fs): int(8 * fs): 2]
        second = feed.chunks(resampled, fs / 2, leads, seq0=len(first), t0=4.0)
        feed.send("fsdev", first + second)
        assert col.wait_for(lambda: "flat_line" in _codes(col, "flat"), 10)
        assert col.wait_for(lambda: "fs_changed" in _codes(col, "fsdev"), 10)
        states = [m["state"] for m in col.get(proto.status_topic("flat"))]
        assert "flat" in states
        fs_msg = next(m for m in col.get(proto.errors_topic("fsdev")) if m["code"] == "fs_changed")
        assert str(fs) in fs_msg["message"] and str(fs / 2) in fs_msg["message"]
        # both devices stop sending: they are flushed and reported stale
        assert col.wait_for(lambda: col.get(proto.status_topic("fsdev"))[-1]["state"] == "stale", 8)
        assert edge.devices()["fsdev"].counters.restarts == 1
        col.close()
        feed.close()


def test_invalid_device_id_goes_to_node_errors(broker) -> None:
    with running_edge(broker) as (edge, settings):
        col = Collector(settings)
        feed = Feeder(settings)
        feed.client.publish("ecg/" + "x" * 80 + "/samples", b"{}", qos=1).wait_for_publish(5)
        assert col.wait_for(lambda: bool(col.get(proto.node_errors_topic("test"))), 5)
        assert col.get(proto.node_errors_topic("test"))[0]["code"] == "bad_device_id"
        assert edge.rejected == {"bad_device_id": 1}
        col.close()
        feed.close()


def test_broker_restart_mid_stream_reconnects_and_resumes(broker, mitdb100) -> None:
    sig, fs, leads = mitdb100
    with running_edge(broker) as (edge, settings):
        feed = Feeder(settings)
        msgs = feed.chunks(sig, fs, leads)
        half = len(msgs) // 2
        col = Collector(settings)
        feed.send("dev", msgs[:half])
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("dev"))) >= 5, 10)
        before = len(col.get(proto.beats_topic("dev")))
        broker.stop()
        edge.subscribed.clear()
        time.sleep(1.0)
        broker.start()
        assert col.wait_for(edge.subscribed.is_set, 20), "edge did not re-subscribe after the restart"
        assert col.wait_for(lambda: feed.client.is_connected() and col.client.is_connected(), 20)
        time.sleep(0.5)
        feed.send("dev", msgs[half:])
        assert col.wait_for(lambda: any(m["time"] > 12.0 for m in col.get(proto.beats_topic("dev"))), 20)
        assert len(col.get(proto.beats_topic("dev"))) > before
        health = edge.health("online")
        assert health["devices"] == 1 and health["publish_dropped"] == 0
        col.close()
        feed.close()
