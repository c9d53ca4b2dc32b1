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

Reported: per beat, published − reference QTc (ms) mean ± sd; per record, the last published median QTc −
the median of the reference QTc (ms), mean ± sd over records; and on MIT-BIH 100 (whole record, no reference
waves) the share of beats with a per-beat QTc > 500 ms and of rhythm messages with a median QTc > 500 ms.

Usage::

    .venv/bin/python bench/intervals.py --json bench/results/intervals.json    # + bench/results/intervals.png
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "intervals.json")
    args = ap.parse_args()
    console = Console(width=150)
    engine = ROOT / "engines" / "wave-seg"
    plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1883)), engines=(engine,)))
    t_start = time.monotonic()
    per_set: dict[str, dict[str, Any]] = {}
    qtdb = args.data / "qtdb"
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
    ludb = args.data / "ludb"
    test = ludb_data.split(ludb_data.record_names(ludb), 0, 0.2, 0.1)["test"]
    rows = {}
    for name in test:
        path = ludb / "data" / name
        rec = read_record(path)
        s, sym = read_annotations(path, "ii")
        out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
        rows[name] = compare(reference_beats(s, sym, rec.fs_hz, None), out, 0.0)
    per_set["LUDB II test"] = rows
    rec = read_record(args.data / "mitdb" / "100")
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
    beat_qtc = np.array([b["intervals_ms"]["QTc_bazett"] for b in out.get("beats", [])
                         if (b.get("intervals_ms") or {}).get("QTc_bazett") is not None])
    med_qtc = np.array([m["median_intervals_ms"]["QTc_bazett"] for m in out.get("rhythm", [])
                        if (m.get("median_intervals_ms") or {}).get("QTc_bazett") is not None])
    mitdb100 = {
        "beats": len(out.get("beats", [])), "beats_with_qtc": int(beat_qtc.size),
        "beat_qtc_over_500_pct": round(100.0 * float((beat_qtc > QTC_LIMIT_MS).mean()), 1) if beat_qtc.size else None,
        "beat_qtc_p5_p50_p95_ms": [round(float(x), 1) for x in np.percentile(beat_qtc, [5, 50, 95])],
        "rhythm_messages_with_median": int(med_qtc.size),
        "median_qtc_over_500_pct": round(100.0 * float((med_qtc > QTC_LIMIT_MS).mean()), 1) if med_qtc.size else None,
        "median_qtc_p5_p50_p95_ms": [round(float(x), 1) for x in np.percentile(med_qtc, [5, 50, 95])],
        "largest_step_between_messages_ms": round(float(np.abs(np.diff(med_qtc)).max()), 1) if med_qtc.size > 1
        else None,
    }
    result: dict[str, Any] = {"engine": "wave-seg", "sets": {}, "mitdb_100": mitdb100}
    table = Table(title="QTc Bazett: edge − reference (ms); median = last rhythm message's median vs reference median")
    for col in ("set", "records", "records with median", "median err mean ± sd", "beats paired", "beat err mean ± sd",
                "beat MAE"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for set_name, recs in per_set.items():
        beat = stats([e for r in recs.values() for e in r["beat_errors_ms"]])
        med = stats([r["median_error_ms"] for r in recs.values() if r["median_error_ms"] is not None])
        result["sets"][set_name] = {"records": len(recs), "beat": beat, "median": med, "per_record": recs}
        table.add_row(set_name, str(len(recs)), str(med["n"]), f"{med['mean_ms']} ± {med['sd_ms']}",
                      str(beat["n"]), f"{beat['mean_ms']} ± {beat['sd_ms']}", str(beat["mae_ms"]))
    console.print(table)
    console.print(f"MIT-BIH 100: {mitdb100}")
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    png = args.json.with_suffix(".png")
    plot(result, beat_qtc, med_qtc, png)
    console.print(f"wrote {args.json} and {png}")


def plot(result: dict[str, Any], beat_qtc: np.ndarray, med_qtc: np.ndarray, path: Path) -> None:
    """Per-beat and median QTc errors per set (box plots) and MIT-BIH 100's per-beat vs median QTc."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), dpi=100, layout="constrained")
    ax, bx = fig.subplots(1, 2)
    data, labels = [], []
    for name, s in result["sets"].items():
        data.append([e for r in s["per_record"].values() for e in r["beat_errors_ms"]])
        labels.append(f"{name}\nper beat")
        data.append([r["median_error_ms"] for r in s["per_record"].values() if r["median_error_ms"] is not None])
        labels.append(f"{name}\nmedian")
    ax.boxplot([d or [np.nan] for d in data], tick_labels=labels, showfliers=True)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel("edge − reference QTc Bazett, ms")
    ax.set_title("QTc error per beat and per record median")
    bx.hist(beat_qtc, bins=60, alpha=0.6, label="per beat")
    bx.hist(med_qtc, bins=60, alpha=0.6, label="median (rhythm messages)")
    bx.axvline(QTC_LIMIT_MS, color="r", linestyle="--", label="500 ms")
    bx.set_xlabel("QTc Bazett, ms")
    bx.set_title("MIT-BIH 100 (MLII)")
    bx.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    main()
