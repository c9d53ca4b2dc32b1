"""Alarms (edge.interpret.alarms) on real records: asystole vs lead-off, VT raise / clear, latching, limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detection.beats import detect_record
from edge.ecg import INTERNAL_FS_HZ
from edge.interpret.alarms import ALARM_PRIORITY, AlarmLimits, AlarmMonitor
from edge.interpret.episodes import EpisodeTracker
from edge.interpret.events import BeatEvent, EpisodeEvent
from offline import rhythm
from offline.records import read_record

GAP_S = (30.0, 40.0)


def _spliced(data_dir: Path, fill: str) -> object:
    """The first 60 s of MIT-BIH 100 (MLII) with 30–40 s replaced by a quiet baseline (``noise``: the last
    level plus 20 µV gaussian noise) or by exact zeros (``zero``: an open input)."""
    rec = read_record(data_dir / "mitdb" / "100")
    fs = rec.fs_hz
    x = rec.signal_mv[: int(60 * fs), 0].astype(np.float64).copy()
    a, b = (int(t * fs) for t in GAP_S)
    if fill == "noise":
        x[a:b] = x[a - 1] + 0.02 * np.random.default_rng(1).standard_normal(b - a)
    else:
        x[a:b] = 0.0
    beats = detect_record(x, fs, chunk_samples=round(0.04 * fs))
    return rhythm.Prepared(f"100-{fill}", len(x) / fs, beats, [None] * len(beats), rhythm.band_passed(x, fs))


def test_asystole_alarm_within_6_s_on_a_quiet_baseline(data_dir: Path) -> None:
    prep = _spliced(data_dir, "noise")
    events, alarms, _ = rhythm.stream(prep, with_classes=False, monitor=AlarmMonitor(AlarmLimits(latching=frozenset())))
    raised = [a for a in alarms if a.state == "raised"]
    asystole = [a for a in raised if a.type == "asystole"]
    assert len(asystole) == 1 and asystole[0].priority == "high"
    assert 0.0 < asystole[0].at_s - GAP_S[0] <= 6.0  # measured: 5.0 s (4 s rule + 1 s chunks)
    assert GAP_S[0] - 1.5 <= asystole[0].time_s <= GAP_S[0]  # the condition began at the last beat
    assert not [a for a in raised if a.type == "lead_off"]
    cleared = [a for a in alarms if a.type == "asystole" and a.state == "cleared"]
    assert cleared and GAP_S[1] <= cleared[0].at_s <= GAP_S[1] + 1.5
    assert [e.type for e in events if e.kind == "start"].count("ASYSTOLE") == 1


def test_lead_off_is_technical_never_asystole(data_dir: Path) -> None:
    prep = _spliced(data_dir, "zero")
    events, alarms, _ = rhythm.stream(prep, with_classes=False, monitor=AlarmMonitor(AlarmLimits(latching=frozenset())))
    raised = [a for a in alarms if a.state == "raised"]
    assert not [a for a in raised if a.type == "asystole"]
    lead_off = [a for a in raised if a.type == "lead_off"]
    assert len(lead_off) == 1 and lead_off[0].technical and lead_off[0].priority == "low"
    assert GAP_S[0] <= lead_off[0].time_s <= GAP_S[0] + 2.0
    assert "NOISE" in [e.type for e in events if e.kind == "start"] and "ASYSTOLE" not in [e.type for e in events]


@pytest.fixture(scope="module")
def mitdb_205(data_dir: Path):
    return rhythm.prepare(data_dir / "mitdb" / "205", beat_classes=True)


def test_vt_alarm_raised_and_cleared_on_mitdb_205(mitdb_205) -> None:
    onset, end = mitdb_205.episodes["VT"][0]  # 298.8–301.8 s, a 6-beat run at ~150 bpm
    _, alarms, _ = rhythm.stream(mitdb_205, with_classes=True, monitor=AlarmMonitor(AlarmLimits(latching=frozenset())))
    vt = [a for a in alarms if a.type == "vt" and onset - 1 <= a.at_s <= end + 1.0]
    assert [a.state for a in vt] == ["raised", "cleared"]
    assert abs(vt[0].time_s - onset) < 0.5 and vt[0].at_s - onset < 2.5  # measured: began 299.0, raised 300.3
    assert end - 0.5 < vt[1].at_s < end + 1.5


def test_no_classes_no_vt_alarm(mitdb_205) -> None:
    _, alarms, _ = rhythm.stream(mitdb_205, with_classes=False, monitor=AlarmMonitor())
    assert not [a for a in alarms if a.type == "vt"]


def test_latching_holds_vt_until_acknowledged(mitdb_205) -> None:
    onset, end = mitdb_205.episodes["VT"][0]
    monitor = AlarmMonitor()  # vt latches by default
    _, alarms, _ = rhythm.stream(mitdb_205, with_classes=True, monitor=monitor)
    vt = [a for a in alarms if a.type == "vt"]
    assert vt[0].state == "raised" and abs(vt[0].time_s - onset) < 0.5
    assert all(a.state == "raised" for a in vt) and len(vt) == 1  # never cleared, later runs add nothing
    assert monitor.raised()["vt"]["condition"] is False
    cleared = monitor.acknowledge("vt", at_s=1800.0)
    assert [(a.type, a.state, a.at_s) for a in cleared] == [("vt", "cleared", 1800.0)]
    assert "vt" not in monitor.raised() and monitor.acknowledge("vt", 1801.0) == []


def test_acknowledged_alarm_clears_when_its_condition_ends() -> None:
    monitor = AlarmMonitor()
    run = {"now_s": 10.0, "active": {}, "vt_run_beats": 6, "vt_run_rate_bpm": 160.0, "vt_run_start_s": 8.0,
           "hr_all_bpm": 160.0, "last_beat_s": 10.0, "signal": "ok"}
    assert [(a.type, a.state) for a in monitor.update(run)] == [("vt", "raised"), ("tachy", "raised")]
    assert monitor.acknowledge("vt", 10.5) == []  # condition still present: silenced, stays raised
    after = {**run, "now_s": 12.0, "vt_run_beats": 0, "vt_run_rate_bpm": None, "vt_run_start_s": None,
             "hr_all_bpm": 80.0}
    assert [(a.type, a.state) for a in monitor.update(after)] == [("vt", "cleared"), ("tachy", "cleared")]


@pytest.mark.parametrize("values", [{"brady_bpm": 200.0}, {"tachy_bpm": 30.0}, {"pause_s": 0.1},
                                    {"vt_run_beats": 1}, {"latching": {"vtach"}}, {"brady_limit": 40}])
def test_bad_limits_are_one_line_value_errors(values: dict) -> None:
    with pytest.raises(ValueError) as err:
        AlarmLimits.from_mapping(values)
    assert "\n" not in str(err.value) and str(err.value)


def test_limits_override_and_priorities() -> None:
    limits = AlarmLimits.from_mapping({"brady_bpm": 35, "tachy_bpm": 170})
    assert (limits.brady_bpm, limits.tachy_bpm, limits.pause_s) == (35, 170, 3.0)
    assert {k for k, v in ALARM_PRIORITY.items() if v == "high"} >= {"asystole", "vf", "vt"}
    assert ALARM_PRIORITY["af"] == "medium" and ALARM_PRIORITY["lead_off"] == "low"


def test_extreme_rates_count_every_beat_not_only_normal_ones() -> None:
    """AF at ~170 bpm whose beats the classifier calls S (as on MIT-BIH 203) has no N-N rate: the tachy alarm must
    still fire (before: it watched the N-N median only and missed both of 203's tachycardic stretches)."""
    tracker, monitor = EpisodeTracker(), AlarmMonitor()
    raised = []
    t = 0.0
    for i in range(30):
        t += 0.35 + 0.02 * (i % 3)
        tracker.push_beat(BeatEvent(time_s=t, rr_s=None if i == 0 else 0.35, cls="S"))
        raised += [a.type for a in monitor.update(tracker.snapshot()) if a.state == "raised"]
    assert tracker.snapshot()["hr_bpm"] is None and tracker.snapshot()["hr_all_bpm"] > 150
    assert raised == ["tachy"]


# ---------------------------------------------------------------------------------------------- real segments
ENGINES = tuple(sorted(p.parent for p in (Path(__file__).resolve().parent.parent / "engines").glob("*/manifest.json")))


def _vfl_starts(data_dir: Path, record: str, start_s: float, end_s: float) -> list[float]:
    """Decision times (s from ``start_s``) of the VFL episode starts on a stretch of a record's band-passed lead,
    fed to the episode layer in 0.2 s blocks as the edge does."""
    rec = read_record(data_dir / "mitdb" / record)
    x = rec.signal_mv[int(start_s * rec.fs_hz):int(end_s * rec.fs_hz), 0].astype(np.float64)
    band = rhythm.band_passed(x, rec.fs_hz)
    tracker, at = EpisodeTracker(), []
    for i in range(0, band.size, 50):
        at += [e.at_s for e in tracker.push_signal(band[i:i + 50], i / INTERNAL_FS_HZ)
               if isinstance(e, EpisodeEvent) and e.type == "VFL" and e.kind == "start"]
    return at


def test_vf_on_mitdb_207s_short_flutter_episode_within_6_s(data_dir: Path) -> None:
    """MIT-BIH 207's VFL episode at 242.26-246.43 s (12 flutter waves at ~180 /min) was missed: its 4 s windows'
    VF-filter leakage bottoms out at 0.46, above the old 0.406 limit; the next one (248.11 s) came 6.9 s late."""
    starts = [t + 212.0 for t in _vfl_starts(data_dir, "207", 212.0, 262.0)]
    first = [t for t in starts if 242.26 - 1.0 <= t <= 246.43 + 5.0]
    assert first and first[0] - 242.26 <= 6.0  # measured: 4.2 s (the next episode: 5.4 s)
    assert len(starts) == 1 or all(t - 248.11 <= 6.0 for t in starts[1:] if t > 246.43 + 5.0)


def test_no_vf_on_sinus_af_and_ventricular_ectopy(data_dir: Path) -> None:
    """The VF window test stays silent on a record of sinus rhythm with PVCs and on AF with aberrant beats."""
    assert _vfl_starts(data_dir, "119", 0.0, 600.0) == []
    assert _vfl_starts(data_dir, "203", 0.0, 600.0) == []


def test_vf_alarm_supersedes_vt_and_rate_alarms_on_mitdb_207(data_dir: Path) -> None:
    """During MIT-BIH 207's long VFL (1540.8-1639.2 s) the classifier calls flutter waves V at > 150 /min: while vf is
    raised, neither vt nor tachy may be raised on top of it (before: 13 vt and 2 tachy raises inside the episode)."""
    from edge.app import EdgeConfig, load_plan
    from edge.pipeline.runner import run_recording
    from edge.transport.mqtt import BrokerAddress, MqttSettings

    if not any(p.name == "beat-cls" for p in ENGINES):
        pytest.skip("no beat-cls engine shipped")
    plan, loaded = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1883)), engines=ENGINES))
    rec = read_record(data_dir / "mitdb" / "207")
    lo, hi = int(1510 * rec.fs_hz), int(1650 * rec.fs_hz)
    msgs = run_recording(rec.signal_mv[lo:hi], rec.fs_hz, rec.leads, loaded, plan,
                         alarm_limits=AlarmLimits(latching=frozenset()))["alarms"]
    vf_on, overlapping = None, []
    for m in msgs:
        if m["type"] == "vf":
            vf_on = m["at"] if m["state"] == "raised" else None
        elif m["state"] == "raised" and vf_on is not None and m["type"] in ("vt", "tachy", "brady"):
            overlapping.append((m["type"], m["at"]))
    assert [m for m in msgs if m["type"] == "vf" and m["state"] == "raised"]
    assert overlapping == []


def test_no_vt_or_rate_alarm_from_a_run_that_began_in_vf(data_dir: Path) -> None:
    """MIT-BIH 207's VFL excerpts (the bench's cases, shipped engines, offline): once vf clears, the V run and the
    8-beat rate that the flutter waves built must not raise vt / tachy as if a new arrhythmia began (before: 2 vt and
    4 tachy raised just after a VFL episode, at none of the reference's vt / tachy events)."""
    from edge.app import EdgeConfig, load_plan
    from edge.transport.mqtt import BrokerAddress, MqttSettings
    from simulator.alarm_cases import excerpt_cases, run_offline, score

    if not any(p.name == "beat-cls" for p in ENGINES):
        pytest.skip("no beat-cls engine shipped")
    plan, loaded = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1883)), engines=ENGINES))
    limits = AlarmLimits(latching=frozenset())
    cases = excerpt_cases(data_dir / "mitdb" / "207", "207", limits)
    results, false = score(cases, run_offline(cases, loaded, plan, limits))
    assert {k: v for k, v in false["207"]["by_type"].items() if k in ("vt", "tachy", "brady")} == {}
    vf = [r for r in results if r.alarm == "vf"]
    assert len(vf) == 6 and all(r.delay_s is not None and r.delay_s <= 6.0 for r in vf)  # measured: max 5.2 s


def test_vt_run_that_ends_between_two_alarm_updates_still_raises(data_dir: Path) -> None:
    """Beats reach the episode layer in bursts (a beat goes out once its segmentation and class are in, so one
    engine batch can release several): MIT-BIH 203's 9-beat VT at 303.6-307.5 s (reference classes) pushed as one
    burst with the N beat after it, the monitor updated once after the burst. Before: the run had ended by the time
    the monitor looked, and no vt was raised (seen live: 203 at 303.6 s missed at one chunk phase, at another raised
    and cleared in the same instant)."""
    prep = rhythm.prepare(data_dir / "mitdb" / "203", beat_classes=True)
    beats = [b for _, b in rhythm.beat_events(prep, True)]
    tracker, monitor = EpisodeTracker(), AlarmMonitor(AlarmLimits(latching=frozenset()))
    before = [b for b in beats if b.time_s < 300.0]
    burst = [b for b in beats if 300.0 <= b.time_s < 309.0]  # ... V V N V N: a 1-beat run ends the burst
    assert "".join(b.cls or "-" for b in burst).count("VVVVVVVVV") == 1  # the run, then non-V beats, in the burst
    for b in before:
        tracker.push_beat(b)
        monitor.update(tracker.snapshot())
    raised_before = {a.type for a in monitor.update(tracker.snapshot()) if a.state == "raised"}
    for b in burst:
        tracker.push_beat(b)
    vt = [a for a in monitor.update(tracker.snapshot()) if a.type == "vt"]
    assert "vt" not in raised_before and [a.state for a in vt] == ["raised"]
    assert 303.3 <= vt[0].time_s <= 304.0  # dated to the run's first V beat (reference 303.6 s)
    after = [a for a in monitor.update(tracker.snapshot()) if a.type == "vt"]
    assert [a.state for a in after] == ["cleared"]  # not latched: the condition is gone at the next look


def test_no_second_pause_alarm_for_a_silence_already_alarmed(data_dir: Path) -> None:
    """The 10 s silence of the asystole case raises pause (after 3 s), then asystole (after 4 s). When the beats
    come back, the completed RR of that silence is no new pause: it was alarmed while it happened. (Before: pause
    raised again, dated to the last beat before the cut, and cleared a moment later.)"""
    prep = _spliced(data_dir, "noise")
    _, alarms, _ = rhythm.stream(prep, with_classes=False, monitor=AlarmMonitor(AlarmLimits(latching=frozenset())))
    pause = [a for a in alarms if a.type == "pause" and a.state == "raised"]
    assert len(pause) == 1 and GAP_S[0] < pause[0].at_s < GAP_S[0] + 5.0  # during the silence, before asystole
    assert [a.type for a in alarms if a.state == "raised" and a.at_s > GAP_S[1]] == []
