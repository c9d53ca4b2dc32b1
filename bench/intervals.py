"""Stability of the edge's QTc: per-beat and median (rhythm message) QTc Bazett vs the annotated QTc.

Each record runs through the edge pipeline offline (:func:`edge.pipeline.runner.run_recording`, the shipped
wave-seg engine only, 40 ms chunks), which publishes per beat ``intervals_ms.QTc_bazett`` and in every rhythm
message ``median_intervals_ms.QTc_bazett`` (median over the last 16 good beats once 8 have it).

Reference QTc per annotated beat: QT = T offset − QRS onset of that beat's marks, Bazett with the reference RR
(R peak − previous reference R peak, 0.3–2 s): QTc = QT / √RR. QTDB: ``.q1c`` marks (cardiologist 1; waves not tied
to a lead), RR from the ``.atr`` beats; each record cut to its annotated part plus 30 s of warm-up before it. LUDB:
lead II marks (``.ii``), RR from the marked QRS peaks; only the held-out **test** records of the training split
(``train.data.ludb.split(names, 0, 0.2, 0.1)``, as bench/delineation.py), 10 s each. Published beats are paired
one-to-one with reference beats within 150 ms (:func:`offline.scoring.pair_beats`).

Three lead configurations (``EdgeConfig.seg_leads``, :data:`LEAD_VARIANTS`): the edge's default (two leads), one
lead (II or MLII), and every lead of the record (2 on QTDB and MIT-BIH, 12 on LUDB); with several, a beat's T is
the one the leads agree on
(:func:`edge.interpret.delineation.combine_leads`). ``--baseline REV`` measures the edge code of git revision REV
as well, in the same run: this script again in a subprocess with a temporary worktree of REV first on its path.

Reported per set: records whose last rhythm message has a median (8 good beats); per record, that median QTc − the
median of the reference QTc (ms), mean ± sd over records; reference beats, beats paired with a published QTc, and
per beat published − reference QTc (ms) mean ± sd. On MIT-BIH 100 (whole record, no reference waves; its 15-min
excerpt QTDB sel100 has them): the share of beats with a per-beat QTc > 500 ms and of rhythm messages with a median
QTc > 500 ms, and the largest step between consecutive medians.

Usage::

    .venv/bin/python bench/intervals.py --baseline d0f427c~1 --json bench/results/intervals.json   # + .png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.app import EdgeConfig, load_plan
from edge.pipeline.runner import run_recording
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.annotations import wave_marks
from offline.records import read_annotations, read_record
from offline.scoring import beat_samples, pair_beats
from train.data import ludb as ludb_data

ROOT = Path(__file__).resolve().parent.parent
MATCH_S = 0.15
LEAD_IN_S = 30.0
QTC_LIMIT_MS = 500.0


def reference_beats(marks_samples: np.ndarray, marks_symbols: list[str], fs_hz: float,
                    r_peaks_s: np.ndarray | None) -> list[dict[str, float]]:
    """Annotated beats with a QT (QRS onset → T offset of the next T) and a reference RR: ``{r_s, qtc_ms}``.

    Args:
        marks_samples / marks_symbols: wave marks (samples at ``fs_hz``); r_peaks_s: reference R peaks (s) for the
            RR, or None to take them from the marked QRS peaks.
    """
    marks = wave_marks(marks_samples, marks_symbols)
    qrs = [m for m in marks if m.wave == "QRS"]
    ts = [m for m in marks if m.wave == "T" and m.off is not None]
    peaks = np.array([m.peak / fs_hz for m in qrs]) if r_peaks_s is None else np.sort(r_peaks_s)
    out = []
    for i, q in enumerate(qrs):
        if q.on is None:
            continue
        r = q.peak / fs_hz
        nxt = qrs[i + 1].peak if i + 1 < len(qrs) else np.inf
        t = next((m for m in ts if q.peak < m.peak < nxt and (m.peak - q.peak) / fs_hz < 0.9), None)
        k = int(np.searchsorted(peaks, r - MATCH_S))  # first reference R at or after this beat's R − 150 ms
        if t is None or k == 0 or k >= peaks.size or abs(peaks[k] - r) > MATCH_S:
            continue
        rr = peaks[k] - peaks[k - 1]
        if 0.3 <= rr <= 2.0:
            out.append({"r_s": r, "qtc_ms": 1e3 * (t.off - q.on) / fs_hz / np.sqrt(rr)})  # type: ignore[operator]
    return out


def compare(refs: list[dict[str, float]], published: dict[str, list[dict]], t0_s: float) -> dict[str, Any]:
    """Per-beat QTc errors (ms) and the record's median error (ms) for one record (``t0_s``: crop offset, s)."""
    beats = published.get("beats", [])
    pub_t = np.round(np.array([b["time"] + t0_s for b in beats]) * 1e6)
    pairs = pair_beats(np.round(np.array([r["r_s"] for r in refs]) * 1e6), pub_t, MATCH_S * 1e6)
    errors = [(beats[i].get("intervals_ms") or {}).get("QTc_bazett") - refs[j]["qtc_ms"]
              for i, j in enumerate(pairs.tolist())
              if j >= 0 and (beats[i].get("intervals_ms") or {}).get("QTc_bazett") is not None]
    medians = [m["median_intervals_ms"]["QTc_bazett"] for m in published.get("rhythm", [])
               if (m.get("median_intervals_ms") or {}).get("QTc_bazett") is not None]
    ref_median = float(np.median([r["qtc_ms"] for r in refs])) if refs else None
    return {"ref_beats": len(refs), "paired_with_qtc": len(errors), "beat_errors_ms": [round(e, 1) for e in errors],
            "ref_median_qtc_ms": None if ref_median is None else round(ref_median, 1),
            "edge_median_qtc_ms": medians[-1] if medians else None,
            "median_error_ms": round(medians[-1] - ref_median, 1) if medians and ref_median is not None else None}


def stats(values: list[float]) -> dict[str, float | int | None]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean_ms": round(float(v.mean()), 1) if v.size else None,
            "sd_ms": round(float(v.std(ddof=1)), 1) if v.size > 1 else None,
            "mae_ms": round(float(np.abs(v).mean()), 1) if v.size else None}


#: The lead configurations measured, as ``EdgeConfig.seg_leads``: the edge's default (two leads,
#: :func:`edge.pipeline.device_inference.default_seg_leads`: II + I, MLII + the other channel), one lead (II or MLII,
#: else the record's first) and every lead of the record (2 on QTDB and MIT-BIH, 12 on LUDB); with several leads the
#: QT comes from the leads that agree.
LEAD_VARIANTS: dict[str, tuple[str, ...]] = {
    "default (two leads)": (), "one lead": ("II", "MLII"), "all leads": ("all",),
}


def measure(data: Path, seg_leads: tuple[str, ...]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One lead configuration on every set: per-set results, and MIT-BIH 100's per-beat and median QTc (ms)."""
    engine = ROOT / "engines" / "wave-seg"
    config = EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1883)), engines=(engine,), seg_leads=seg_leads)
    plan, engines = load_plan(config)
    per_set: dict[str, dict[str, Any]] = {}
    qtdb = data / "qtdb"
    rows = {}
    for hea in sorted(qtdb.glob("*.hea")):
        path = hea.with_suffix("")
        if not path.with_suffix(".q1c").exists():
            continue
        rec = read_record(path)
        s, sym = read_annotations(path, "q1c")
        a_s, a_sym = read_annotations(path, "atr")
        fs = rec.fs_hz
        lo = max(0, int(s.min() - LEAD_IN_S * fs))
        hi = min(rec.n_samples, int(s.max() + 5 * fs))
        refs = reference_beats(s, sym, fs, beat_samples(a_s, a_sym) / fs)
        out = run_recording(rec.signal_mv[lo:hi], fs, rec.leads, engines, plan)
        rows[rec.name] = compare(refs, out, lo / fs)
    per_set["QTDB q1c"] = rows
    ludb = data / "ludb"
    test = ludb_data.split(ludb_data.record_names(ludb), 0, 0.2, 0.1)["test"]
    rows = {}
    for name in test:
        path = ludb / "data" / name
        rec = read_record(path)
        s, sym = read_annotations(path, "ii")
        out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
        rows[name] = compare(reference_beats(s, sym, rec.fs_hz, None), out, 0.0)
    per_set["LUDB II test"] = rows
    rec = read_record(data / "mitdb" / "100")
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
    beat_qtc = np.array([b["intervals_ms"]["QTc_bazett"] for b in out.get("beats", [])
                         if (b.get("intervals_ms") or {}).get("QTc_bazett") is not None])
    med_qtc = np.array([m["median_intervals_ms"]["QTc_bazett"] for m in out.get("rhythm", [])
                        if (m.get("median_intervals_ms") or {}).get("QTc_bazett") is not None])
    result: dict[str, Any] = {"seg_leads": list(seg_leads), "sets": {}, "mitdb_100": {
        "beats": len(out.get("beats", [])), "beats_with_qtc": int(beat_qtc.size),
        "beat_qtc_over_500_pct": pct_over(beat_qtc), "beat_qtc_p5_p50_p95_ms": percentiles(beat_qtc),
        "rhythm_messages": len(out.get("rhythm", [])), "rhythm_messages_with_median": int(med_qtc.size),
        "median_qtc_over_500_pct": pct_over(med_qtc), "median_qtc_p5_p50_p95_ms": percentiles(med_qtc),
        "largest_step_between_messages_ms": round(float(np.abs(np.diff(med_qtc)).max()), 1) if med_qtc.size > 1
        else None,
    }}
    for set_name, recs in per_set.items():
        result["sets"][set_name] = {
            "records": len(recs), "ref_beats": sum(r["ref_beats"] for r in recs.values()),
            "beat": stats([e for r in recs.values() for e in r["beat_errors_ms"]]),
            "median": stats([r["median_error_ms"] for r in recs.values() if r["median_error_ms"] is not None]),
            "per_record": recs}
    return result, beat_qtc, med_qtc


def pct_over(values: np.ndarray) -> float | None:
    """Share of ``values`` above :data:`QTC_LIMIT_MS` (%)."""
    return round(100.0 * float((values > QTC_LIMIT_MS).mean()), 1) if values.size else None


def percentiles(values: np.ndarray) -> list[float] | None:
    """p5 / p50 / p95 of ``values``."""
    return [round(float(x), 1) for x in np.percentile(values, [5, 50, 95])] if values.size else None


def run_baseline(rev: str, data: Path) -> dict[str, Any]:
    """This script's measurements with the edge code of git revision ``rev`` (a temporary worktree first on the
    subprocess's path; engines and data as here)."""
    from baseline import add_worktree, remove_worktree

    folder = add_worktree(rev)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "baseline.json"
            env = {**os.environ, "PYTHONPATH": str(folder)}
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--json", str(out),
                            "--label", rev], env=env, check=True)
            return json.loads(out.read_text())["variants"]
    finally:
        remove_worktree(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "intervals.json")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also measure the edge code of git revision REV, in the same run (a temporary worktree)")
    ap.add_argument("--label", default="current", help="name of this code's variants in the table and JSON")
    args = ap.parse_args()
    console = Console(width=160)
    t_start = time.monotonic()
    variants: dict[str, Any] = {}
    mit: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if args.baseline:
        for name, res in run_baseline(args.baseline, args.data).items():
            variants[name] = res
            mit[name] = (np.asarray(res["mitdb_100_beat_qtc_ms"]), np.asarray(res["mitdb_100_median_qtc_ms"]))
    for leads_name, seg_leads in LEAD_VARIANTS.items():
        res, beat_qtc, med_qtc = measure(args.data, seg_leads)
        res["mitdb_100_beat_qtc_ms"] = beat_qtc.tolist()
        res["mitdb_100_median_qtc_ms"] = med_qtc.tolist()
        variants[f"{args.label}, {leads_name}"] = res
        mit[f"{args.label}, {leads_name}"] = (beat_qtc, med_qtc)
    table = Table(title="QTc Bazett: edge − reference (ms); median = last rhythm message's median vs reference median")
    for col in ("code, leads segmented", "set", "records", "with median", "median err mean ± sd", "ref beats",
                "beats with QTc", "beat err mean ± sd", "beat MAE"):
        table.add_column(col, justify="left" if col in ("code, leads segmented", "set") else "right")
    for name, res in variants.items():
        for set_name, s in res["sets"].items():
            beat, med = s["beat"], s["median"]
            table.add_row(name, set_name, str(s["records"]), str(med["n"]), f"{med['mean_ms']} ± {med['sd_ms']}",
                          str(s.get("ref_beats", "")), str(beat["n"]), f"{beat['mean_ms']} ± {beat['sd_ms']}",
                          str(beat["mae_ms"]))
    console.print(table)
    mt = Table(title="MIT-BIH 100 (30 min, normal sinus): share of QTc Bazett > 500 ms")
    for col in ("code, leads segmented", "beats", "beats with QTc", "beat QTc > 500", "beat p5/p50/p95",
                "medians", "median > 500", "median p5/p50/p95", "largest step"):
        mt.add_column(col, justify="left" if col == "code, leads segmented" else "right")
    for name, res in variants.items():
        m = res["mitdb_100"]
        mt.add_row(name, str(m["beats"]), str(m["beats_with_qtc"]), f"{m['beat_qtc_over_500_pct']} %",
                   str(m["beat_qtc_p5_p50_p95_ms"]), str(m["rhythm_messages_with_median"]),
                   f"{m['median_qtc_over_500_pct']} %", str(m["median_qtc_p5_p50_p95_ms"]),
                   str(m["largest_step_between_messages_ms"]))
    console.print(mt)
    result = {"engine": "wave-seg", "baseline": args.baseline, "variants": variants,
              "wall_s": round(time.monotonic() - t_start, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    png = args.json.with_suffix(".png")
    plot(variants, mit, png)
    console.print(f"wrote {args.json} and {png}")


def plot(variants: dict[str, Any], mit: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Per-record median QTc errors per set and variant (box plots) and MIT-BIH 100's median QTc per variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 5.5), dpi=100, layout="constrained")
    ax, bx = fig.subplots(1, 2)
    data, labels = [], []
    for name, res in variants.items():
        for set_name, s in res["sets"].items():
            data.append([r["median_error_ms"] for r in s["per_record"].values() if r["median_error_ms"] is not None])
            labels.append(f"{set_name}\n{name}")
    ax.boxplot([d or [np.nan] for d in data], tick_labels=labels, showfliers=True)
    ax.tick_params(axis="x", labelsize=7, labelrotation=60)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel("edge median − reference median QTc Bazett, ms")
    ax.set_title("Median QTc error per record")
    for name, (_, med_qtc) in mit.items():
        if med_qtc.size:
            bx.hist(med_qtc, bins=np.arange(380, 600, 4), alpha=0.5, label=f"{name} ({med_qtc.size} messages)")
    bx.axvline(QTC_LIMIT_MS, color="r", linestyle="--", label="500 ms")
    bx.set_xlabel("median QTc Bazett in the rhythm messages, ms")
    bx.set_title("MIT-BIH 100 (normal sinus)")
    bx.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    main()
