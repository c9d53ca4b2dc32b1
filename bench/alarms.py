"""Alarm delays over MQTT: records with known events replayed through mosquitto into the edge, and offline.

Cases (:mod:`simulator.alarm_cases`, which states each rule): MIT-BIH excerpts, 30 s before the onset to 10 s after
the end, around every annotated ``(VT`` / ``(VFL`` episode and every stretch where the reference rate (60 / median of
the last 8 RR intervals between reference beats of any class, the alarm's own rule) is below ``brady_bpm`` (40) or
above ``tachy_bpm`` (150) for ≥ 5 s; DS1 records and the DS2 development test (200, 210, 232) reported apart;
synthetic asystole (every lead a flat baseline with 20 µV white noise and 50 µV 0.3 Hz wander for 8 s) and lead-off
(the preferred lead at 0 mV for 8 s) cut into clean stretches of MIT-BIH records; clean stretches of records without
VT / VFL (every vt / vf / asystole / brady / tachy / lead_off alarm there is false). No signal is resampled in time.

Each reference event is held to the alarm's **own definition** (:class:`edge.interpret.alarms.AlarmLimits`): a VT
episode is a vt event when the reference holds ≥ ``vt_run_beats`` (5) consecutive V beats at a mean rate above
``vt_rate_bpm`` (100 bpm); a rate stretch is a brady / tachy event when it lasts ≥ 5 s. The others are reported in
their own ``below`` rows (how many alarmed, with the delays), never as misses; an alarm on them is not false.
A reference pause of ≥ 4 s (no beat, outside VFL) is an asystole event. An alarm already raised at an event's onset
detects it (delay 0); a vt / brady / tachy alarm inside a VFL episode (or vf inside VT) is counted apart, not false.

Each case plays as one simulated device (binary payloads, 40 ms chunks) at ``--speed`` × real time through a fresh
mosquitto into an in-process EdgeApp with the shipped engines (wave-seg, rhythm-cls, and beat-cls when present:
the vt alarm needs beat classes), alarm latching off. Delay = arrival − reference onset in **device seconds**;
arrival = the stream's device time when the alarm message reached a subscriber, i.e. (arrival wall time − replay
start) × speed. At speed S a wall latency L shows as L × S device s, so the MQTT figure is pessimistic for S > 1.
The same cases also run offline through :func:`edge.pipeline.runner.run_recording` (delay = the alarm's ``at`` −
onset), so the MQTT overhead is the difference. An alarm counts for an event when it arrives within
[onset − 1 s, end + 5 s]. Bounds: IEC 60601-2-27 ≤ 10 s; target ≤ 6 s for asystole, vf, vt.
The events missed or over 6 s are listed after the table, with what the reference shows.

Usage::

    .venv/bin/python bench/alarms.py --json bench/results/alarms.json          # + bench/results/alarms.png
    .venv/bin/python bench/alarms.py --records 205 --dev-records "" --clean-records 100 --speed 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.app import EdgeConfig, load_plan
from edge.inference.manifest import Manifest
from edge.interpret.alarms import AlarmLimits
from edge.transport.mqtt import BrokerAddress, MqttSettings
from simulator.alarm_cases import AlarmCase, clean_case, excerpt_cases, gap_case, replay, run_offline, score, summary

ROOT = Path(__file__).resolve().parent.parent
LIFE_THREATENING = ("asystole", "vf", "vt", "brady", "tachy")
IEC_BOUND_S = 10.0
TARGET_S = 6.0


def build_cases(args: argparse.Namespace, limits: AlarmLimits) -> list[AlarmCase]:
    mitdb = args.data / "mitdb"
    cases: list[AlarmCase] = []
    for group, names in (("DS1", args.records.split()), ("DS2 (dev test)", args.dev_records.split())):
        for name in names:
            cases += excerpt_cases(mitdb / name, group, limits, args.lead_in_s, args.tail_s, args.min_rate_s)
    for i, name in enumerate(args.gap_records.split()):
        for kind in ("asystole", "lead_off"):
            cases.append(gap_case(mitdb / name, kind, 60.0 * (i + 1), 40.0, 20.0, seed=i))
    for name in args.clean_records.split():
        cases.append(clean_case(mitdb / name, "clean", 0.0, 60.0 * args.clean_minutes))
    return sorted(cases, key=lambda c: c.duration_s, reverse=True)  # balanced batches


def engine_sha256(folder: Path) -> str:
    """sha256 of an engine's ONNX model (its manifest's ``files`` entry, verified when the manifest loads)."""
    return str(Manifest.load(folder).files["model.onnx"]["sha256"])


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def definitions(limits: AlarmLimits, min_rate_s: float) -> dict[str, str]:
    """The reference rule of each summary row (``vt``, ``vt below`` …), in words, from the limits used."""
    run = f"≥ {limits.vt_run_beats} V in a row at > {limits.vt_rate_bpm:g} bpm"
    rate = {"brady": f"8-RR rate < {limits.brady_bpm:g} bpm", "tachy": f"8-RR rate > {limits.tachy_bpm:g} bpm"}
    out = {"vt": run, "vt below": f"VT episode, not {run}", "vf": "VFL episode",
           "asystole": "no beat ≥ 4 s (synthetic: 8 s flat)", "lead_off": "lead at 0 mV for 8 s"}
    for k, v in rate.items():
        out[k], out[f"{k} below"] = f"{v} ≥ {min_rate_s:g} s", f"{v} < {min_rate_s:g} s"
    return out


def print_tables(console: Console, out: dict[str, Any]) -> None:
    speed = out["settings"]["speed"]
    table = Table(title="Alarm delay from the reference onset (device s): MQTT arrival (wall latency once) | "
                        f"the replay's {speed:g}x clock (latency x {speed:g}) | offline decision")
    for col in ("group", "alarm", "reference rule", "events", "detected", "missed", "p50 MQTT", "max MQTT",
                f"detected | max {speed:g}x clock", "p50 offline", "max offline", "≤ 6 s", "≤ 10 s", "bound"):
        table.add_column(col, justify="left" if col in ("group", "alarm", "reference rule") else "right")
    for group, rows in out["mqtt"]["summary"].items():
        for label, s in rows.items():
            o = out["offline"]["summary"].get(group, {}).get(label, {})
            k = out["mqtt_clock"]["summary"].get(group, {}).get(label, {})
            below = s["status"] == "below"
            bound = f"≤ {TARGET_S:g} (target), ≤ {IEC_BOUND_S:g}" if s["alarm"] in LIFE_THREATENING else \
                f"≤ {IEC_BOUND_S:g}"
            bound = "— (below the alarm definition)" if below else bound
            table.add_row(group, label, out["definitions"].get(label, ""), str(s["events"]), str(s["detected"]),
                          "—" if below else str(s["missed"]), fmt(s["delay_p50_s"]), fmt(s["delay_max_s"]),
                          f"{k.get('detected')} | {fmt(k.get('delay_max_s'))}", fmt(o.get("delay_p50_s")),
                          fmt(o.get("delay_max_s")), str(s["within_6_s"]), str(s["within_10_s"]), bound)
    console.print(table)
    table = Table(title="False alarms (raised with no reference event of their type, or a forbidden type)")
    for col in ("group", "hours", "MQTT by type", "MQTT / h", "offline by type", "offline / h",
                "not false: inside a reference event of another ventricular type (MQTT | offline)"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, f in out["mqtt"]["false"].items():
        o = out["offline"]["false"][group]
        table.add_row(group, f"{f['hours']:.2f}", json.dumps(f["by_type"]), f"{f['per_hour']:.2f}",
                      json.dumps(o["by_type"]), f"{o['per_hour']:.2f}",
                      f"{json.dumps(f['in_other_event'])} | {json.dumps(o['in_other_event'])}")
    console.print(table)
    table = Table(title=f"Events that meet the alarm definition, missed or over {TARGET_S:g} s (delay, s)")
    for col in ("case", "alarm", "onset s", "end s", "reference", "MQTT", "wall latency", f"{speed:g}x clock",
                "offline"):
        table.add_column(col)
    offline = {(e["case"], e["alarm"], e["onset_s"]): e for e in out["offline"]["events"]}
    clock = {(e["case"], e["alarm"], e["onset_s"]): e for e in out["mqtt_clock"]["events"]}
    for e in out["mqtt"]["events"]:
        key = (e["case"], e["alarm"], e["onset_s"])
        o, k = offline.get(key, {}), clock.get(key, {})
        late = [d for d in (e["delay_s"], o.get("delay_s"), k.get("delay_s")) if d is None or d > TARGET_S]
        if e["status"] == "event" and late:
            table.add_row(e["case"], e["alarm"], f"{e['onset_s']:.1f}", f"{e['end_s']:.1f}", e["detail"],
                          fmt(e["delay_s"]), fmt(e["latency_s"]), fmt(k.get("delay_s")), fmt(o.get("delay_s")))
    console.print(table)


def plot(out: dict[str, Any], path: Path) -> None:
    """Delay per event (MQTT arrival, offline decision) by alarm type, with the 6 s and 10 s bound lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    def label(e: dict[str, Any]) -> str:
        return e["alarm"] if e["status"] == "event" else f"{e['alarm']} {e['status']}"

    types = list(dict.fromkeys(label(e) for e in out["mqtt"]["events"]))
    names = {"mqtt": "MQTT (wall latency once)", "offline": "offline decision"}
    for mode, dx, y, colour in (("mqtt", -0.15, -0.9, "#1f77b4"), ("offline", 0.15, -1.4, "#ff7f0e")):
        for i, alarm in enumerate(types):
            d = [e["delay_s"] for e in out[mode]["events"] if label(e) == alarm and e["delay_s"] is not None]
            missed = sum(1 for e in out[mode]["events"] if label(e) == alarm and e["delay_s"] is None)
            x = i + dx + np.linspace(-0.08, 0.08, len(d)) if d else []
            ax.scatter(x, d, s=14, color=colour, label=names[mode] if i == 0 else None)
            if missed:
                word = "not alarmed" if alarm.endswith("below") else "missed"
                ax.text(i, y, f"{missed} {word}", ha="center", fontsize=7, color=colour)
    ax.axhline(TARGET_S, color="r", linestyle="--", linewidth=1, label=f"target {TARGET_S:g} s (life-threatening)")
    ax.axhline(IEC_BOUND_S, color="k", linestyle=":", linewidth=1, label=f"IEC 60601-2-27 {IEC_BOUND_S:g} s")
    ax.set_xticks(range(len(types)), types, fontsize=8)
    ax.set_ylabel("delay from reference onset, device s")
    ax.set_ylim(-1.8, max(12.0, *(e["delay_s"] or 0 for m in ("mqtt", "offline") for e in out[m]["events"])) + 1)
    ax.set_title(f"Alarm delay per event, MIT-BIH + synthetic, MQTT at {out['settings']['speed']:g}x vs offline")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--records", default="203 205 207 215 106 223 201", help="DS1 records with events")
    ap.add_argument("--dev-records", default="200 210 232", help="DS2 development-test records with events")
    ap.add_argument("--gap-records", default="100 103", help="clean records cut for synthetic asystole / lead-off")
    ap.add_argument("--clean-records", default="101 112 115 122 100 103", help="records without VT / VFL")
    ap.add_argument("--clean-minutes", type=float, default=5.0, help="minutes of each clean record")
    ap.add_argument("--lead-in-s", type=float, default=30.0)
    ap.add_argument("--tail-s", type=float, default=10.0)
    ap.add_argument("--min-rate-s", type=float, default=5.0,
                    help="s a reference rate stretch must last to be a brady / tachy event")
    ap.add_argument("--speed", type=float, default=10.0, help="replay speed (x real time)")
    ap.add_argument("--parallel", type=int, default=4, help="devices replayed at once")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "alarms.json")
    args = ap.parse_args()
    console = Console(width=160)
    if not (args.data / "mitdb").is_dir():
        raise SystemExit(f"no MIT-BIH folder at {args.data / 'mitdb'}")
    if args.speed <= 0 or args.parallel < 1 or args.min_rate_s < 0:
        raise SystemExit("--speed must be > 0, --parallel >= 1 and --min-rate-s >= 0")
    names = " ".join((args.records, args.dev_records, args.gap_records, args.clean_records)).split()
    missing = [n for n in names if not (args.data / "mitdb" / f"{n}.hea").is_file()]
    if missing:
        raise SystemExit(f"no MIT-BIH record {', '.join(missing)} in {args.data / 'mitdb'} (record lists are "
                         f"space-separated names, e.g. --records \"205 223\")")
    engines = tuple(sorted(p.parent for p in (ROOT / "engines").glob("*/manifest.json")))
    limits = AlarmLimits(latching=frozenset())
    cases = build_cases(args, limits)
    device_s = sum(c.duration_s for c in cases)
    console.print(f"{len(cases)} cases, {device_s / 60:.1f} device min; engines "
                  f"{ {Manifest.load(e).name: engine_sha256(e)[:12] for e in engines} }; load {os.getloadavg()[0]:.2f}")
    t0 = time.monotonic()
    mqtt_alarms, facts = replay(cases, engines, limits, args.speed, args.parallel)
    t_mqtt = time.monotonic() - t0
    plan, loaded = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1883)), engines=engines))
    t0 = time.monotonic()
    offline_alarms = run_offline(cases, loaded, plan, limits)
    t_offline = time.monotonic() - t0
    out: dict[str, Any] = {
        "settings": {"speed": args.speed, "parallel": args.parallel, "records": args.records,
                     "dev_records": args.dev_records, "gap_records": args.gap_records,
                     "clean_records": args.clean_records, "clean_minutes": args.clean_minutes,
                     "lead_in_s": args.lead_in_s, "tail_s": args.tail_s,
                     "engines": {Manifest.load(e).name: engine_sha256(e) for e in engines},
                     "limits": {"brady_bpm": limits.brady_bpm, "tachy_bpm": limits.tachy_bpm,
                                "vt_run_beats": limits.vt_run_beats, "vt_rate_bpm": limits.vt_rate_bpm,
                                "min_rate_s": args.min_rate_s}},
        "definitions": definitions(limits, args.min_rate_s),
        "cases": [{"name": c.name, "group": c.group, "source": c.source, "duration_s": round(c.duration_s, 1),
                   "events": [e.__dict__ for e in c.events]} for c in cases],
        "replay": facts | {"mqtt_wall_s": round(t_mqtt, 1), "offline_wall_s": round(t_offline, 1),
                           "device_s": round(device_s, 1), "loadavg_end": os.getloadavg()[0]},
    }
    for mode, alarms, clock in (("mqtt", mqtt_alarms, False), ("mqtt_clock", mqtt_alarms, True),
                                ("offline", offline_alarms, False)):
        events, false = score(cases, alarms, clock)
        for f in false.values():
            f["per_hour"] = round(sum(f["by_type"].values()) / f["hours"], 2) if f["hours"] else 0.0
            f["hours"] = round(f["hours"], 3)
        out[mode] = {"summary": summary(events), "false": false, "events": [e.as_dict() for e in events]}
    print_tables(console, out)
    lat = np.array([a.latency_s for msgs in mqtt_alarms.values() for a in msgs if a.state == "raised"])
    if lat.size:
        out["replay"]["latency_s"] = {"p50": round(float(np.median(lat)), 3), "max": round(float(lat.max()), 3)}
        console.print(f"wall latency of the raised alarms (signal due -> message arrived): p50 {np.median(lat):.3f} "
                      f"s, max {lat.max():.3f} s over {lat.size}")
    console.print(f"replay: {facts}; MQTT {t_mqtt:.0f} s, offline {t_offline:.0f} s wall for {device_s:.0f} "
                  f"device s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    png = args.json.with_suffix(".png")
    plot(out, png)
    console.print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
