"""Rhythm episodes and alarms (edge.interpret.episodes / alarms) on MIT-BIH, CPSC 2021 and the CinC 2021 sample.

Every record runs through the live code path as :mod:`offline.rhythm` streams it: beats from the edge's detector
(``detect_record`` on the preferred lead, fed in 40 ms chunks), the band-passed lead at the internal rate (the
edge's streaming resampler and display band-pass) in 1 s chunks, and each beat pushed once the detector would have
emitted it (R time + its latency). Beat classes come from the reference: a detected beat paired one-to-one with a
reference beat within 150 ms (:func:`offline.scoring.pair_beats`) takes the EC57 class of its symbol
(``edge.ecg.MITDB_TO_AAMI``), an unpaired detection is ``Q``. Each record also runs with no class at all
(RR-only). CPSC and CinC carry no class per beat: RR-only there.

Reference episodes: MIT-BIH ``+`` annotations whose ``aux_note`` starts with ``(`` (an episode lasts until the next
one); CPSC 2021 ``(AFIB`` to the next ``(N`` or the end. AF = AFIB + AFL. Metrics (ANSI/AAMI EC57 style, gross =
pooled over records): episode Se (reference episodes overlapped by a detected one of the type), episode +P
(detected episodes overlapping a reference one), duration Se (overlap / reference time), duration +P (overlap /
detected time), false episodes per hour on records without that rhythm. Tuning sets: MIT-BIH DS1 and CPSC subjects
8 and 21; development test (never tuned on): MIT-BIH DS2 (100 103 105 200 210 232) and CPSC subject 101; 104
(paced) reported apart.

A third mode, ``edge``, scores what a user of the product gets: each MIT-BIH and CPSC record through the whole edge
pipeline offline (:func:`edge.pipeline.runner.run_recording`, what ``beatssl-edge detect`` runs: every lead, the
shipped ``wave-seg`` for P waves and ``beat-cls`` for the classes, the episode and alarm layers), its episode and
alarm messages scored the same way (``--no-edge`` skips it: it is the slow part, ~1 min per 30 min record on 2
cores).

Alarm delay: for each annotated VT and VFL onset, device time from the onset to the raised ``vt`` / ``vf`` alarm
(an alarm counts for an onset when it is raised in [onset − 1 s, episode end + 5 s]); false alarms per hour on
records without those episodes (latching off, nothing acknowledged).

Usage::

    python bench/arrhythmia.py --data ../shared/data --json bench/results/arrhythmia.json \
        --png bench/results/arrhythmia.png
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from edge.app import EdgeConfig, load_plan
from edge.inference import Engine
from edge.interpret.af import DashAFDetector
from edge.interpret.alarms import ALARM_PRIORITY, AlarmEvent, AlarmLimits, AlarmMonitor
from edge.interpret.episodes import EpisodeTracker
from edge.interpret.events import EpisodeEvent
from edge.pipeline.device_inference import InferencePlan
from edge.pipeline.runner import episodes_table, run_recording
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.records import read_record
from offline.rhythm import Prepared, beat_events, overlap, prepare, spans, stream

DS1 = ("101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230").split()
DS2 = ("100 103 105 200 210 232").split()
PACED = ("104",)
CPSC_TUNE_SUBJECTS = ("8", "21")
CPSC_TEST_SUBJECTS = ("101",)
EPISODE_TYPES = ("AF", "VT", "B", "T", "SVTA", "VFL", "SBR")
#: CinC 2021 rhythm labels (dx_scored_abbrev) and the call that matches each.
CINC_RHYTHMS = {"NSR": "N", "SB": "SBR", "STach": "STACH", "AF": "AFIB", "AFL": "AFIB"}


@dataclass
class EpisodeScore:
    """Pooled EC57-style counts for one rhythm type."""

    ref_eps: int = 0
    ref_found: int = 0
    det_eps: int = 0
    det_true: int = 0
    ref_s: float = 0.0
    det_s: float = 0.0
    overlap_s: float = 0.0
    false_eps_clean: int = 0
    clean_hours: float = 0.0

    def add(self, ref: list[tuple[float, float]], det: list[tuple[float, float]], duration_s: float) -> None:
        self.ref_eps += len(ref)
        self.ref_found += sum(1 for r in ref if overlap([r], det) > 0)
        self.det_eps += len(det)
        self.det_true += sum(1 for d in det if overlap([d], ref) > 0)
        self.ref_s += sum(e - s for s, e in ref)
        self.det_s += sum(e - s for s, e in det)
        self.overlap_s += overlap(ref, det)
        if not ref:
            self.false_eps_clean += len(det)
            self.clean_hours += duration_s / 3600.0

    def as_dict(self) -> dict[str, float | int | None]:
        def ratio(a: float, b: float) -> float | None:
            return round(100.0 * a / b, 1) if b else None

        return {
            "episode_se": ratio(self.ref_found, self.ref_eps), "episode_ppv": ratio(self.det_true, self.det_eps),
            "duration_se": ratio(self.overlap_s, self.ref_s), "duration_ppv": ratio(self.overlap_s, self.det_s),
            "ref_episodes": self.ref_eps, "det_episodes": self.det_eps,
            "false_per_hour_clean": round(self.false_eps_clean / self.clean_hours, 2) if self.clean_hours else None,
            "clean_hours": round(self.clean_hours, 2),
        }


def score(preps: list[Prepared], results: dict[str, list[EpisodeEvent]], types: Iterable[str]) -> dict[str, Any]:
    out = {}
    for rhythm in types:
        s = EpisodeScore()
        for p in preps:
            s.add(p.episodes.get(rhythm, []), spans(results[p.name], rhythm), p.duration_s)
        out[rhythm] = s.as_dict()
    return out


def alarm_delays(preps: list[Prepared], alarms: dict[str, list[AlarmEvent]], vt_run_beats: int) -> dict[str, Any]:
    """Delay (s) from each annotated VT / VFL onset to the vt / vf alarm, and false alarms per hour elsewhere.

    ``long_runs`` / ``long_alarmed``: VT episodes holding ≥ ``vt_run_beats`` reference V beats (the alarm's run
    limit) and how many of them raised the alarm."""
    out: dict[str, Any] = {}
    for rhythm, kind in (("VT", "vt"), ("VFL", "vf")):
        delays: list[float] = []
        missed: list[dict[str, Any]] = []
        long_runs = long_alarmed = 0
        false_n, clean_h = 0, 0.0
        for p in preps:
            raised = [a.at_s for a in alarms[p.name] if a.type == kind and a.state == "raised"]
            ref = p.episodes.get(rhythm, [])
            for s, e in ref:
                hit = [t for t in raised if s - 1.0 <= t <= e + 5.0]
                if int(((p.ref_v_s >= s - 0.05) & (p.ref_v_s <= e)).sum()) >= vt_run_beats:
                    long_runs += 1
                    long_alarmed += bool(hit)
                if hit:
                    delays.append(hit[0] - s)
                else:
                    n_v = int(((p.ref_v_s >= s - 0.05) & (p.ref_v_s <= e)).sum())
                    missed.append({"record": p.name, "onset_s": round(s, 1), "duration_s": round(e - s, 1),
                                   "ref_v_beats": n_v})
            if not ref:
                false_n += len(raised)
                clean_h += p.duration_s / 3600.0
        d = np.asarray(delays)
        out[kind] = {
            "onsets": len(delays) + len(missed), "alarmed": len(delays),
            "long_runs": long_runs, "long_alarmed": long_alarmed,
            "delay_p50_s": round(float(np.median(d)), 2) if d.size else None,
            "delay_max_s": round(float(d.max()), 2) if d.size else None,
            "missed": missed,
            "false_per_hour_clean": round(false_n / clean_h, 2) if clean_h else None,
        }
    hours = sum(p.duration_s for p in preps) / 3600.0
    for kind in ("asystole", "brady", "tachy", "pause", "af", "lead_off"):
        n = sum(1 for p in preps for a in alarms[p.name] if a.type == kind and a.state == "raised")
        out[kind] = {"raised": n, "per_hour": round(n / hours, 2)}
    return out


def vt_found_by_rule(preps: list[Prepared], results: dict[str, list[EpisodeEvent]]) -> dict[str, int]:
    """Reference VT episodes holding ≥ 3 reference V beats (what a ≥ 3-beat rule can find), and how many were."""
    n = found = short = 0
    for p in preps:
        det = spans(results[p.name], "VT")
        for s, e in p.episodes.get("VT", []):
            if int(((p.ref_v_s >= s - 0.05) & (p.ref_v_s <= e)).sum()) < 3:
                short += 1
                continue
            n += 1
            found += overlap([(s, e)], det) > 0
    return {"episodes_3_or_more_v": n, "found": found, "episodes_under_3_v": short}


def cinc_calls(folder: Path) -> dict[str, Any]:
    """Per-record rhythm call of the CinC 2021 sample: records carrying exactly one of :data:`CINC_RHYTHMS`.

    The call is the tracker's at the end of the record, fed the beats only (RR-only); ``window`` is the AF
    detector's own window call there, without the on-hysteresis (a 10 s record holds only 8–17 intervals).
    """
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    confusion: dict[str, dict[str, int]] = {}
    correct = n = 0
    correct_window = 0
    for row in rows:
        labels = [lab for lab in row["dx_scored_abbrev"].split(";") if lab in CINC_RHYTHMS]
        if len(labels) != 1:
            continue
        prep = prepare(folder / row["source"] / row["record"], beat_classes=False)
        tracker = EpisodeTracker()
        for _, b in beat_events(prep, False):
            tracker.push_beat(b)
        call = tracker.call.rhythm
        call = call if call in CINC_RHYTHMS.values() else "N"
        window = "AFIB" if tracker.af.call() else call if call != "AFIB" else "N"
        want = CINC_RHYTHMS[labels[0]]
        n += 1
        correct += call == want
        correct_window += window == want
        confusion.setdefault(labels[0], {}).setdefault(call, 0)
        confusion[labels[0]][call] += 1
    return {"records": n, "accuracy": round(100.0 * correct / max(n, 1), 1),
            "accuracy_af_window_call": round(100.0 * correct_window / max(n, 1), 1), "confusion": confusion}


#: The shipped engines the ``edge`` mode runs (the diagnosis engine changes no episode or alarm).
EDGE_ENGINES = (Path("engines/wave-seg"), Path("engines/beat-cls"))


def load_edge() -> tuple[InferencePlan | None, dict[str, Engine]]:
    """The plan and engines of the ``edge`` mode (:data:`EDGE_ENGINES`, one ONNX Runtime thread each)."""
    return load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=EDGE_ENGINES, threads=1))


def run_edge(path: Path, limits: AlarmLimits, plan: InferencePlan | None,
             engines: Mapping[str, Engine]) -> tuple[list[EpisodeEvent], list[AlarmEvent]]:
    """One record through the whole edge pipeline (:func:`edge.pipeline.runner.run_recording` with the plan and
    engines of :func:`load_edge`): its episodes as end events and its alarm messages as events."""
    rec = read_record(path)
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan, device=rec.name, alarm_limits=limits)
    duration = len(rec.signal_mv) / rec.fs_hz
    episodes = [EpisodeEvent("end", e["type"], e["start"], e["end"], e["end"])
                for e in episodes_table(out.get("episodes", []), duration)]
    alarms = [AlarmEvent(a["type"], ALARM_PRIORITY[a["type"]], a["state"], a["time"], a["at"])
              for a in out.get("alarms", []) if a.get("state") in ("raised", "cleared")]
    return episodes, alarms


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def print_scores(console: Console, title: str, rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title=title)
    for col in ("set / rhythm", "ep Se %", "ep +P %", "dur Se %", "dur +P %", "ref eps", "det eps", "false / h"):
        table.add_column(col, justify="right")
    for name, s in rows.items():
        table.add_row(name, *(_fmt(s[k]) for k in ("episode_se", "episode_ppv", "duration_se", "duration_ppv")),
                      str(s["ref_episodes"]), str(s["det_episodes"]), _fmt(s["false_per_hour_clean"]))
    console.print(table)


def plot(results: dict[str, Any], prep: Prepared, events: list[EpisodeEvent], path: Path) -> None:
    """AF duration Se / +P per method and set, and one record's reference vs detected episodes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 8), dpi=100, layout="constrained")
    ax, tl = fig.subplots(2, 1)
    labels, se, ppv = [], [], []
    for (set_name, method), s in results["af_table"].items():
        labels.append(f"{set_name}\n{method}")
        se.append(s["duration_se"] or 0.0)
        ppv.append(s["duration_ppv"] or 0.0)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, se, 0.4, label="duration Se")
    ax.bar(x + 0.2, ppv, 0.4, label="duration +P")
    ax.axhline(95, color="k", linestyle=":", linewidth=1, label="target 95 %")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.set_title("AF (AFIB + AFL) duration Se / +P: this rule (reference classes / RR-only) vs Dash 2009")
    types = ("AF", "VT", "B", "T", "SVTA", "VFL")
    for i, rhythm in enumerate(types):
        for s, e in prep.episodes.get(rhythm, []):
            tl.barh(i + 0.2, e - s, left=s, height=0.35, color="#3fb950")
        for s, e in spans(events, rhythm):
            tl.barh(i - 0.2, e - s, left=s, height=0.35, color="#f85149")
    tl.set_yticks(range(len(types)), types)
    tl.set_xlabel("time, s")
    tl.set_title(f"MIT-BIH {prep.name}: reference (green, upper) vs detected with reference classes (red, lower)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--json", type=Path, default=Path("bench/results/arrhythmia.json"))
    ap.add_argument("--png", type=Path, default=Path("bench/results/arrhythmia.png"))
    ap.add_argument("--timeline-record", default="203")
    ap.add_argument("--no-edge", action="store_true", help="skip the edge mode (the whole pipeline with the shipped "
                    "engines; ~1 min per 30 min record on 2 cores)")
    args = ap.parse_args()
    console = Console(width=150)
    no_latch = AlarmLimits(latching=frozenset())
    mitdb = {r: prepare(args.data / "mitdb" / r, beat_classes=True) for r in (*DS1, *DS2, *PACED)}
    cpsc = {p.stem: prepare(p.with_suffix(""), beat_classes=False)
            for p in sorted((args.data / "cpsc2021_af").glob("*.hea"))}
    out: dict[str, Any] = {"episodes": {}, "af_table": {}, "alarms": {}}
    runs: dict[str, dict[str, list[EpisodeEvent]]] = {}
    modes = ("classes", "rr_only") if args.no_edge else ("classes", "rr_only", "edge")
    paths = {**{r: args.data / "mitdb" / r for r in mitdb}, **{n: args.data / "cpsc2021_af" / n for n in cpsc}}
    edge = load_edge() if "edge" in modes else (None, {})
    for mode in modes:
        ours: dict[str, list[EpisodeEvent]] = {}
        dash: dict[str, list[EpisodeEvent]] = {}
        alarms: dict[str, list[AlarmEvent]] = {}
        for name, prep in track({**mitdb, **cpsc}.items(), description=f"{mode:8s}", console=console):
            if mode == "edge":
                ours[name], alarms[name] = run_edge(paths[name], no_latch, *edge)
                continue
            ours[name], alarms[name], dash[name] = stream(prep, mode == "classes", monitor=AlarmMonitor(no_latch),
                                                          baseline=DashAFDetector())
        runs[mode] = ours
        sets = {"DS1": [mitdb[r] for r in DS1], "DS2 (dev test)": [mitdb[r] for r in DS2],
                "104 (paced)": [mitdb["104"]],
                "CPSC 8+21 (tune)": [p for n, p in cpsc.items() if n.split("_")[1] in CPSC_TUNE_SUBJECTS],
                "CPSC 101 (test)": [p for n, p in cpsc.items() if n.split("_")[1] in CPSC_TEST_SUBJECTS]}
        rows: dict[str, dict[str, Any]] = {}
        for set_name, preps in sets.items():
            types = ("AF",) if set_name.startswith("CPSC") else ("PACED", "AF") if set_name.startswith("104") else \
                EPISODE_TYPES
            for rhythm, s in score(preps, ours, types).items():
                rows[f"{set_name} {rhythm}"] = s
            out["af_table"][(set_name, f"ours {mode}")] = score(preps, ours, ["AF"])["AF"]
            if mode == "classes":
                out["af_table"][(set_name, "Dash 2009")] = score(preps, dash, ["AF"])["AF"]
        out["episodes"][mode] = rows
        title = {"classes": "beats with reference classes", "rr_only": "beats RR-only",
                 "edge": "the whole edge pipeline, shipped engines"}[mode]
        print_scores(console, f"Episodes, {title}", rows)
        out["alarms"][mode] = alarm_delays([mitdb[r] for r in (*DS1, *DS2)], alarms, no_latch.vt_run_beats)
        out.setdefault("vt_rule", {})[mode] = {
            "DS1": vt_found_by_rule([mitdb[r] for r in DS1], ours),
            "DS2": vt_found_by_rule([mitdb[r] for r in DS2], ours)}
    print_scores(console, "AF (AFIB + AFL): this rule vs the RR-only baseline (Dash et al. 2009)",
                 {f"{k[0]} | {k[1]}": v for k, v in out["af_table"].items()})
    for mode in modes:
        table = Table(title=f"Alarms on MIT-BIH DS1 + DS2, {mode} (delay from annotated onset to raised, device s)")
        for col in ("alarm", "onsets", "alarmed", "onsets >= run limit (alarmed)", "p50 s", "max s",
                    "false / h (no such episode)"):
            table.add_column(col, justify="right")
        a = out["alarms"][mode]
        for kind in ("vt", "vf"):
            table.add_row(kind, str(a[kind]["onsets"]), str(a[kind]["alarmed"]),
                          f"{a[kind]['long_runs']} ({a[kind]['long_alarmed']})" if kind == "vt" else "",
                          _fmt(a[kind]["delay_p50_s"]), _fmt(a[kind]["delay_max_s"]),
                          _fmt(a[kind]["false_per_hour_clean"]))
        for kind in ("asystole", "brady", "tachy", "pause", "af", "lead_off"):
            table.add_row(kind, "", str(a[kind]["raised"]), "", "", "", _fmt(a[kind]["per_hour"]))
        console.print(table)
    console.print(f"VT rule coverage: {out['vt_rule']}")
    out["cinc2021"] = cinc_calls(args.data / "cinc2021_sample")
    console.print(f"CinC 2021 sample rhythm calls: {out['cinc2021']}")
    out["af_table"] = {f"{k[0]} | {k[1]}": v for k, v in out["af_table"].items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    plot({"af_table": {tuple(k.split(" | ")): v for k, v in out["af_table"].items()}}, mitdb[args.timeline_record],
         runs["classes"][args.timeline_record], args.png)
    console.print(f"wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
