"""VT runs (edge.interpret.ventricular.RunDetector) on the edge's own classes: MIT-BIH stretches through the whole
pipeline (shipped wave-seg and beat-cls), scored against the reference VT episodes; and the run's API the vt alarm
reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from edge.interpret.events import BeatEvent
from edge.interpret.ventricular import RunDetector
from edge.pipeline.runner import episodes_table, run_recording
from offline.records import read_record
from offline.rhythm import overlap, rhythm_episodes


def _edge_vt(data_dir: Path, record: str, from_s: float, to_s: float, edge_engines):
    """The edge's VT episodes (s) and beats on ``[from_s, to_s)`` of an MIT-BIH record, and the reference VT."""
    plan, engines = edge_engines
    path = data_dir / "mitdb" / record
    rec, ann = read_record(path), wfdb.rdann(str(path), "atr")
    a, b = int(from_s * rec.fs_hz), int(to_s * rec.fs_hz)
    out = run_recording(rec.signal_mv[a:b], rec.fs_hz, rec.leads, engines, plan, t0_s=a / rec.fs_hz)
    vt = [(e["start"], e["end"]) for e in episodes_table(out.get("episodes", []), to_s) if e["type"] == "VT"]
    ref = rhythm_episodes(ann.sample, list(ann.symbol), list(ann.aux_note), rec.fs_hz, rec.duration_s)
    ref_vt = [(s, e) for s, e in ref.get("VT", []) if s < to_s and e > from_s]
    return vt, out["beats"], ref_vt


def test_a_run_of_doubtful_v_calls_in_af_is_no_vt(data_dir: Path, edge_engines) -> None:
    """MIT-BIH 203 (AF with multiform PVCs), 1200-1270 s: the annotated VT at 1202.6 s is found, and three AF beats
    (reference N) that the classifier calls V only because its V threshold is low (V probabilities 0.12 / 0.14 /
    0.22, N 0.80 / 0.75 / 0.67) make no VT. Before the run's median V probability was required (>= 0.2) they
    started a VT episode at 1254.5 s. Since the dominant-beat veto (their QRS is the patient's dominant one) the
    first is N; the other two follow the classifier's V call, where the veto keeps V (a run goes on)."""
    vt, beats, ref_vt = _edge_vt(data_dir, "203", 1200.0, 1270.0, edge_engines)
    assert len(ref_vt) == 1 and abs(ref_vt[0][0] - 1202.6) < 0.1
    doubtful = [b for b in beats if 1254.4 <= b["time"] <= 1255.7 and b["class_probs"]["V"] >= 0.1]
    v_probs = [b["class_probs"]["V"] for b in doubtful]
    assert len(doubtful) == 3 and float(np.median(v_probs)) < 0.2, v_probs  # measured 0.12 0.14 0.22
    assert [b["class"] for b in doubtful] == ["N", "V", "V"]
    true = [d for d in vt if overlap([d], ref_vt) > 0]
    false = [d for d in vt if overlap([d], ref_vt) == 0]
    assert len(true) == 1 and not false, vt


def test_a_fusion_beat_inside_a_v_run_belongs_to_it(data_dir: Path, edge_engines) -> None:
    """MIT-BIH 223, the annotated 3-beat VT at 747.4 s (from the record's start, as the edge sees it): the
    classifier calls its middle V beat F, which used to end the run (V, F, V: no VT, the episode was missed)."""
    vt, beats, ref_vt = _edge_vt(data_dir, "223", 0.0, 760.0, edge_engines)
    target = [(s, e) for s, e in ref_vt if abs(s - 747.4) < 0.1]
    assert len(target) == 1
    run = [b["class"] for b in beats if 747.5 <= b["time"] <= 748.8]
    assert run == ["V", "F", "V"], run
    assert [d for d in vt if overlap([d], target) > 0], vt


def test_the_weakest_found_vt_run_is_kept(data_dir: Path, edge_engines) -> None:
    """MIT-BIH 215, the annotated 3-beat VT at 179.2 s: the weakest of DS1's VT runs that the edge finds (median V
    probability 0.255, above the 0.2 limit) is still a VT episode."""
    vt, beats, ref_vt = _edge_vt(data_dir, "215", 0.0, 190.0, edge_engines)
    target = [(s, e) for s, e in ref_vt if abs(s - 179.2) < 0.1]
    probs = [b["class_probs"]["V"] for b in beats if 179.2 <= b["time"] <= 180.1 and b["class"] == "V"]
    assert len(target) == 1 and len(probs) == 3 and 0.2 <= float(np.median(probs)) < 0.3, probs
    assert [d for d in vt if overlap([d], target) > 0], vt


def test_the_alarm_sees_a_run_only_once_it_is_probable() -> None:
    """run_beats / run_rate_bpm / run_start_s / ended (what the vt alarm reads) describe a run once its median V
    probability has met the limit; a run of doubtful V calls never shows there."""
    det = RunDetector("VT", "V", min_beats=3, min_rate_bpm=100.0, min_median_prob=0.2)
    doubtful = [BeatEvent(t, cls="V", class_probs={"V": 0.15, "N": 0.85}) for t in (1.0, 1.4, 1.8, 2.2, 2.6)]
    assert not [e for b in doubtful for e in det.push(b)]
    assert (det.run_beats, det.run_rate_bpm, det.run_start_s) == (0, None, None)
    det.push(BeatEvent(3.4, cls="N"))
    assert not det.ended
    sure = [BeatEvent(t, cls="V", class_probs={"V": 0.9}) for t in (5.0, 5.4)]
    events = [e for b in (*sure, BeatEvent(5.8, cls="F"), BeatEvent(6.2, cls="V", class_probs={"V": 0.15}))
              for e in det.push(b)]
    assert [(e.kind, e.start_s, e.at_s) for e in events] == [("start", 5.0, 6.2)]  # V V F V: 4 beats, median 0.9
    assert (det.run_beats, det.run_rate_bpm, det.run_start_s) == (4, pytest.approx(150.0), 5.0)
    det.push(BeatEvent(6.6, cls="F"))  # a fusion beat after the run: waits for the next beat
    assert det.run_beats == 4
    events = det.push(BeatEvent(7.0, cls="F"))  # two in a row end the run at its last V beat
    assert [(e.kind, e.start_s, e.end_s) for e in events] == [("end", 5.0, 6.2)]
    assert list(det.ended) == [(1, 5.0, 4, pytest.approx(150.0))]


def _edge_episodes(data_dir: Path, record: str, from_s: float, to_s: float, edge_engines) -> list[dict]:
    """The edge's episode start / end messages on ``[from_s, to_s)`` of an MIT-BIH record (device time, s)."""
    plan, engines = edge_engines
    rec = read_record(data_dir / "mitdb" / record)
    a, b = int(from_s * rec.fs_hz), int(to_s * rec.fs_hz)
    return run_recording(rec.signal_mv[a:b], rec.fs_hz, rec.leads, engines, plan, t0_s=a / rec.fs_hz)["episodes"]


def test_no_vt_run_starts_inside_the_edges_vfl_episode(data_dir: Path, edge_engines) -> None:
    """MIT-BIH 207, 230-270 s (reference VFL 242.3-246.6 and 248.1-261.7 s, no VT): the classifier calls the flutter
    waves V, and two V runs at 257.1 and 258.3 s used to start VT episodes while the edge's own VFL episode (from
    249.0 s, decided at 253.5 s) was on. Beats inside an edge VFL episode no longer enter a VT run. The two runs
    whose VT onset was decided before the VFL onset was (242.4 and 251.3 s) still start, and end at their last beat
    before the VFL."""
    episodes = _edge_episodes(data_dir, "207", 230.0, 270.0, edge_engines)
    vfl = [(e["start"], e["at"], e["end"]) for e in episodes if e["type"] == "VFL" and e["state"] == "end"]
    assert [(s, e) for s, _, e in vfl] == [(242.0, 248.0), (249.0, 262.5)], vfl
    opened = {e["start"]: e["at"] for e in episodes if e["type"] == "VFL" and e["state"] == "start"}
    vt = [(e["start"], e["at"]) for e in episodes if e["type"] == "VT" and e["state"] == "start"]
    inside = [(s, at) for s, at in vt for v0, _, v1 in vfl if opened[v0] <= at < v1]
    assert not inside, inside  # before: (257.08, 257.71) and (258.30, 258.94)
    assert [round(s, 1) for s, _ in vt] == [242.4, 251.3], vt
    ends = [e["end"] for e in episodes if e["type"] == "VT" and e["state"] == "end"]
    assert ends[0] < 246.5 and ends[1] < 253.5, ends  # measured 245.46 / 252.48 (before 246.26 / 253.99)


def test_a_vt_run_just_after_the_edges_vfl_episode_is_found(data_dir: Path, edge_engines) -> None:
    """MIT-BIH 207, 0-70 s: the annotated VT at 61.8 s follows the reference VFL (54.9-60.6 s) at once, and the
    edge's VFL episode ends at 61.0 s but is decided only at 63.0 s. Beats are judged by their own time against the
    VFL span, so the V beats after 61.0 s still make a VT episode (62.55 s) that overlaps the reference VT; both
    annotated VT episodes (38.5 and 61.8 s) are found."""
    vt, _, ref_vt = _edge_vt(data_dir, "207", 0.0, 70.0, edge_engines)
    assert [round(s, 1) for s, _ in ref_vt] == [38.5, 61.8], ref_vt
    assert all(overlap(vt, [r]) > 0 for r in ref_vt), vt
