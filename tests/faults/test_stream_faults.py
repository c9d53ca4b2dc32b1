"""A broken, rebooting or jittery device against a real edge on a real mosquitto: it never stops or mutes another
device, is never muted itself, and no beat is lost at a cut. Each case failed on the code before its fix (noted)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from edge_harness import Collector, Feeder, running_edge

from edge import protocol as proto
from edge.detection.beats import detect_record
from offline.records import read_record

ENGINES = Path(__file__).resolve().parents[2] / "engines"


@pytest.fixture(scope="module")
def mitdb100(data_dir):
    rec = read_record(data_dir / "mitdb" / "100")
    n = int(30 * rec.fs_hz)
    return rec.signal_mv[:n], rec.fs_hz, rec.leads


def _samples(col: Collector, device: str) -> list[int]:
    return [m["sample"] for m in col.get(proto.beats_topic(device))]


def _matched(got: list[int], want: list[int], tol: int = 2) -> int:
    """How many of ``want`` have a received beat within ``tol`` samples."""
    got_a = np.asarray(sorted(got))
    if not len(got_a):
        return 0
    return sum(int(np.min(np.abs(got_a - w)) <= tol) for w in want)


def test_one_device_with_a_huge_t0_stops_no_other(broker, mitdb100) -> None:
    """Before: OverflowError in the worker outside its try → the worker died, 3 of 4 devices stopped."""
    sig, fs, leads = mitdb100
    good = [f"good-{i}" for i in range(3)]
    want = [b.sample for b in detect_record(sig[: int(12 * fs)], fs)]
    with running_edge(broker, workers=2, stale_after_s=1.5) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig[: int(12 * fs)], fs, leads)
        bad = proto.SamplesMessage(3, fs, leads, 1e308, sig[:14])  # held (seq 1, 2 missing) until evil expires
        feed.raw("evil", proto.encode_samples_json(msgs[0]))
        feed.raw("evil", proto.encode_samples_json(bad))
        half = len(msgs) // 2
        for device in good:
            feed.send(device, msgs[:half])
        time.sleep(2.5)  # evil goes stale meanwhile: its expiry used to raise in the worker
        for device in good:
            feed.send(device, msgs[half:])
        assert col.wait_for(lambda: all(len(_samples(col, d)) >= len(want) for d in good), 20)
        for device in good:
            assert _matched(_samples(col, device), want) == len(want)
        assert "bad_time" in [m["code"] for m in col.get(proto.errors_topic("evil"))]
        assert all(t.is_alive() for t in edge.threads())
        col.close()
        feed.close()


def test_rebooted_device_restarting_seq_at_zero_is_not_muted(broker, mitdb100) -> None:
    """Before: every chunk below the expected seq was dropped as a duplicate, for ever."""
    sig, fs, leads = mitdb100
    cut = int(12 * fs)
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        before = feed.chunks(sig[:cut], fs, leads, seq0=0, t0=0.0)
        after = feed.chunks(sig[cut:], fs, leads, seq0=0, t0=cut / fs + 2.0)  # rebooted: seq 0, clock went on
        feed.send("reboot", before)
        feed.send("reboot", after)
        want_after = [b.sample + cut + int(2.0 * fs) for b in detect_record(sig[cut:], fs)]
        assert col.wait_for(lambda: _matched(_samples(col, "reboot"), want_after) >= len(want_after) - 2, 20)
        assert edge.devices()["reboot"].counters.renumbered == 1
        assert "seq_restart" in [m["code"] for m in col.get(proto.errors_topic("reboot"))]
        col.close()
        feed.close()


def test_three_chunks_with_a_huge_seq_do_not_mute_a_device(broker, mitdb100) -> None:
    """Before: seq 10**9 set the expected seq for good; 297 of 297 later chunks were dropped."""
    sig, fs, leads = mitdb100
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig[: int(20 * fs)], fs, leads)
        forged = [proto.SamplesMessage(10**9 + i, m.fs_hz, m.leads, m.t0_s, m.data_mv) for i, m in
                  enumerate(msgs[100:103])]
        feed.send("jumpy", msgs[:100] + forged + msgs[103:])
        want = [b.sample for b in detect_record(sig[: int(20 * fs)], fs)]
        late = [w for w in want if w > 103 * len(msgs[0].data_mv) + fs]
        assert col.wait_for(lambda: _matched(_samples(col, "jumpy"), late) >= len(late) - 1, 20)
        col.close()
        feed.close()


def test_t0_jitter_of_15_ms_restarts_nothing(broker, mitdb100) -> None:
    """Before: 20 ms against the first chunk's jittered t0 restarted the detector on almost every chunk (4 of 74
    beats survived) and the restarts counter stayed 0."""
    sig, fs, leads = mitdb100
    rng = np.random.default_rng(7)
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig, fs, leads)
        jitter = rng.uniform(-0.015, 0.015, len(msgs))
        jitter[0] = 0.015  # the first chunk, too, is late: the clock is judged against an estimate, not against it
        jittered = [proto.SamplesMessage(m.seq, m.fs_hz, m.leads, m.t0_s + j, m.data_mv)
                    for m, j in zip(msgs, jitter, strict=True)]
        feed.send("jitter", jittered)
        want = [b.sample for b in detect_record(sig, fs)]
        assert col.wait_for(lambda: len(_samples(col, "jitter")) >= len(want) - 1, 20)
        assert _matched(_samples(col, "jitter"), want, tol=int(0.02 * fs)) >= len(want) - 1
        stream = edge.devices()["jitter"]
        assert stream.counters.restarts == 0 and "time_jump" not in stream.counters.errors
        clock = stream.status()["clock"]  # the jitter is estimated and stated, and the tolerance scales with it
        assert 3.0 < clock["jitter_ms"] < 30.0 and clock["tolerance_ms"] >= 100.0
        col.close()
        feed.close()


def test_a_gap_keeps_the_beats_before_the_cut(broker, mitdb100) -> None:
    """Before: a gap restarted the detector without flushing it, so beats in its look-ahead were lost silently (and
    beats after a restart were numbered ±1 sample off). Now the cut keeps its beats and the resumed run numbers beats
    exactly as the offline detector does on the resumed signal."""
    sig, fs, leads = mitdb100
    with running_edge(broker) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig, fs, leads)
        n = len(msgs[0].data_mv)
        beat = next(b.sample for b in detect_record(sig, fs) if b.sample > 8 * fs)
        last = -(-(beat + int(0.05 * fs)) // n)  # the chunk cut 50 ms after a beat: it is in the look-ahead
        feed.send("gappy", msgs[:last] + msgs[last + 10:])
        cut = last * n
        want = [b.sample for b in detect_record(sig[:cut], fs)]
        assert beat in want
        assert col.wait_for(lambda: any(s > cut + 5 * fs for s in _samples(col, "gappy")), 20)
        got = [s for s in _samples(col, "gappy") if s < cut]
        assert _matched(got, want) == len(want) and len(got) == len(want)
        # and after the restart, exactly the beats of the resumed signal on the device's own numbering (not ±1)
        resume = (last + 10) * n
        assert col.wait_for(lambda: any(m["state"] == "stale" for m in col.get(proto.status_topic("gappy"))), 15)
        after = [s for s in _samples(col, "gappy") if s >= resume]
        assert after == [b.sample + resume for b in detect_record(sig[resume:], fs, chunk_samples=n)]
        col.close()
        feed.close()


def test_a_ten_second_record_gets_its_rhythm_label(broker, data_dir) -> None:
    """Before: the resampler's 20 ms look-ahead was never drained, so a 10.000 s record gave 2 495 of the 2 500
    samples the classifier window needs and no label ever came."""
    rec = read_record(data_dir / "ptbxl" / "records500" / "06000" / "06000_hr")
    assert rec.signal_mv.shape[0] == 5000
    with running_edge(broker, engines=(ENGINES / "rhythm-cls",),
                      stale_after_s=1.0) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        feed.send("ptbxl", feed.chunks(rec.signal_mv, rec.fs_hz, rec.leads))
        assert col.wait_for(lambda: any(m["diagnosis_probs"] for m in col.get(proto.rhythm_topic("ptbxl"))), 15)
        col.close()
        feed.close()


@pytest.mark.parametrize("outage_s", [3.0, 20.0])
def test_a_broker_outage_does_not_restart_the_detector(broker, mitdb100, outage_s: float) -> None:
    """Before: the stale timer ran while the edge itself was disconnected, so a 3 s outage became a stream end and a
    detector restart."""
    sig, fs, leads = mitdb100
    with running_edge(broker, stale_after_s=2.0) as (edge, settings):
        col, feed = Collector(settings), Feeder(settings)
        msgs = feed.chunks(sig, fs, leads)
        half = len(msgs) // 2
        feed.send("steady", msgs[:half])
        # the broker (no persistence here) must have handed every chunk on before it goes down
        assert col.wait_for(lambda: "steady" in edge.devices() and edge.devices()["steady"].counters.chunks == half,
                            10)
        # and every beat it could already decide has reached the collector (not in flight when the broker dies)
        cut = half * len(msgs[0].data_mv)
        decided = [b.sample for b in detect_record(sig[:cut], fs) if b.sample < cut - 0.5 * fs]
        assert col.wait_for(lambda: _matched(_samples(col, "steady"), decided) == len(decided), 10)
        subacks = col.subacks
        broker.stop()
        edge.subscribed.clear()
        time.sleep(outage_s)
        broker.start()
        assert col.wait_for(edge.subscribed.is_set, 20), "edge did not re-subscribe after the restart"
        assert col.wait_for(lambda: feed.client.is_connected() and col.subacks > subacks, 30)
        feed.send("steady", msgs[half:])
        want = [b.sample for b in detect_record(sig, fs)]
        assert col.wait_for(lambda: _matched(_samples(col, "steady"), want[-3:]) == 3, 20)
        stream = edge.devices()["steady"]
        assert stream.counters.restarts == 0
        firsts = [m for m in col.get(proto.beats_topic("steady")) if m["rr_s"] is None]
        assert len(firsts) == 1, f"the detector restarted: {len(firsts)} runs"
        missed = len(want) - _matched(_samples(col, "steady"), want)
        assert missed <= 2, f"{missed} beats lost around the outage"  # the collector, too, was cut off meanwhile
        health = edge.health("online")
        assert health["broker_outages"] == 1 and health["last_outage_s"] >= outage_s
        col.close()
        feed.close()
