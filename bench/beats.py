"""Benchmark the edge's streaming beat detector against wfdb's XQRS and neurokit2 on MIT-BIH and QTDB.

Scoring (the same for every detector):

* reference beats are the ``.atr`` annotations whose symbol is a beat symbol (:data:`offline.scoring.BEAT_SYMBOLS`);
* one-to-one matching within ±150 ms (ANSI/AAMI EC57); counts are pooled over the records of a database;
* reference beats and detections in the first and last 0.5 s of a record are left out (edge effects: no detector
  can be judged on a beat whose QRS is cut by the record's ends);
* ventricular flutter episodes (``[`` … ``]`` in the annotations, record 207) are left out: they hold no beat
  annotations, only flutter waves (EC57 excludes them from QRS detection scoring).

Ours runs on the live code path (``detect_record``) fed in ``--chunk-ms`` chunks and is timed over
that path (resampling included); XQRS runs on lead 0, neurokit2 (``ecg_clean`` then ``ecg_peaks``, its defaults) on
lead 0, both offline on the whole record. Throughput is record duration / processing time, one stream, one core.

Usage::

    python bench/beats.py --data ../shared/data --chunk-ms 40 --json bench-beats.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.detection.beats import detect_record
from offline.plots import plot_latency_histogram
from offline.records import Record, read_annotations, read_record
from offline.scoring import BEAT_MATCH_WINDOW_S, beat_samples, match_beats

EDGE_S = 0.5
DETECTORS = ("ours", "xqrs", "neurokit2")
DATABASES = ("mitdb", "qtdb")


@dataclass
class Score:
    """Counts and time of one detector on one or more records."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    seconds: float = 0.0
    duration_s: float = 0.0

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.seconds += other.seconds
        self.duration_s += other.duration_s

    @property
    def se(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        return self.tp / max(1, self.tp + self.fp)

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fn + self.fp)

    @property
    def x_realtime(self) -> float:
        return self.duration_s / max(self.seconds, 1e-12)

    def as_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp, "fn": self.fn, "fp": self.fp, "se": self.se, "ppv": self.ppv, "f1": self.f1,
            "seconds": self.seconds, "x_realtime": self.x_realtime,
        }


@dataclass
class Results:
    """Per-record and pooled scores of every detector, and our latencies."""

    per_record: dict[str, dict[str, Score]] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    searchback: int = 0

    def pooled(self, detector: str, records: list[str]) -> Score:
        total = Score()
        for name in records:
            total.add(self.per_record[name][detector])
        return total


def excluded_intervals(samples: np.ndarray, symbols: list[str]) -> list[tuple[int, int]]:
    """Ventricular flutter episodes ``[`` … ``]`` as (start, end) sample pairs (an open one runs to the end)."""
    intervals = []
    start = None
    for sample, symbol in zip(samples.tolist(), symbols, strict=True):
        if symbol == "[":
            start = sample
        elif symbol == "]" and start is not None:
            intervals.append((start, sample))
            start = None
    if start is not None:
        intervals.append((start, np.iinfo(np.int64).max))
    return intervals


def scored(samples: np.ndarray, n_samples: int, fs_hz: float, excluded: list[tuple[int, int]]) -> np.ndarray:
    """The samples that are scored: not within EDGE_S of the record's ends, not inside an excluded interval."""
    samples = np.asarray(samples, dtype=np.int64)
    edge = round(EDGE_S * fs_hz)
    keep = (samples >= edge) & (samples < n_samples - edge)
    for start, end in excluded:
        keep &= (samples < start) | (samples > end)
    return samples[keep]


def run_ours(record: Record, chunk_ms: float, results: Results) -> tuple[np.ndarray, float]:
    chunk = max(1, round(chunk_ms * 1e-3 * record.fs_hz))
    t0 = time.perf_counter()
    beats = detect_record(record.signal_mv, record.fs_hz, chunk_samples=chunk)
    seconds = time.perf_counter() - t0
    results.latencies_s.extend(b.latency_s for b in beats)
    results.searchback += sum(b.searchback for b in beats)
    return np.array([b.sample for b in beats], dtype=np.int64), seconds


def run_xqrs(record: Record) -> tuple[np.ndarray, float]:
    from wfdb.processing import XQRS

    t0 = time.perf_counter()
    xqrs = XQRS(sig=record.signal_mv[:, 0].astype(np.float64), fs=record.fs_hz)
    xqrs.detect(verbose=False)
    return np.asarray(xqrs.qrs_inds, dtype=np.int64), time.perf_counter() - t0


def run_neurokit2(record: Record) -> tuple[np.ndarray, float]:
    import neurokit2 as nk

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = nk.ecg_clean(record.signal_mv[:, 0].astype(np.float64), sampling_rate=record.fs_hz)
        _, info = nk.ecg_peaks(cleaned, sampling_rate=record.fs_hz)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64), time.perf_counter() - t0


def bench_record(path: Path, detectors: list[str], chunk_ms: float, results: Results) -> dict[str, Score]:
    record = read_record(path)
    samples, symbols = read_annotations(path)
    excluded = excluded_intervals(samples, symbols)
    ref = scored(beat_samples(samples, symbols), record.n_samples, record.fs_hz, excluded)
    runners: dict[str, Callable[[], tuple[np.ndarray, float]]] = {
        "ours": lambda: run_ours(record, chunk_ms, results),
        "xqrs": lambda: run_xqrs(record),
        "neurokit2": lambda: run_neurokit2(record),
    }
    scores = {}
    for name in detectors:
        detected, seconds = runners[name]()
        test = scored(detected, record.n_samples, record.fs_hz, excluded)
        tp, fn, fp = match_beats(ref, test, BEAT_MATCH_WINDOW_S * record.fs_hz)
        scores[name] = Score(tp, fn, fp, seconds, record.duration_s)
    return scores


def record_names(folder: Path, wanted: list[str] | None) -> list[str]:
    names = (folder / "RECORDS").read_text().split()
    return [n for n in names if wanted is None or n in wanted]


def print_tables(console: Console, results: Results, groups: dict[str, list[str]], detectors: list[str]) -> None:
    per = Table(title="Per record: Se / PPV / F1 (%)")
    per.add_column("record")
    for name in detectors:
        per.add_column(name, justify="right")
    for db, names in groups.items():
        for rec in names:
            row = [f"{db}/{rec}"]
            for det in detectors:
                s = results.per_record[f"{db}/{rec}"][det]
                row.append(f"{100 * s.se:6.2f} {100 * s.ppv:6.2f} {100 * s.f1:6.2f}  (fn {s.fn}, fp {s.fp})")
            per.add_row(*row)
    console.print(per)
    pooled = Table(title="Pooled over records")
    for col in ("database", "detector", "TP", "FN", "FP", "Se %", "PPV %", "F1 %", "× real time", "ours ×"):
        pooled.add_column(col, justify="right")
    for db, names in groups.items():
        keys = [f"{db}/{n}" for n in names]
        ours = results.pooled("ours", keys) if "ours" in detectors else None
        for det in detectors:
            s = results.pooled(det, keys)
            ratio = f"{ours.x_realtime / s.x_realtime:.1f}" if ours else "-"
            pooled.add_row(db, det, str(s.tp), str(s.fn), str(s.fp), f"{100 * s.se:.2f}", f"{100 * s.ppv:.2f}",
                           f"{100 * s.f1:.2f}", f"{s.x_realtime:.0f}", ratio)
    console.print(pooled)


def main() -> None:
    default_data = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data, help="folder holding mitdb/ and qtdb/")
    parser.add_argument("--chunk-ms", type=float, default=40.0, help="chunk length fed to our stream (ms)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--records", nargs="*", default=None, help="record names to run (default: all)")
    parser.add_argument("--databases", nargs="*", default=list(DATABASES), choices=DATABASES)
    parser.add_argument("--detectors", nargs="*", default=list(DETECTORS), choices=DETECTORS)
    args = parser.parse_args()
    console = Console()
    results = Results()
    groups: dict[str, list[str]] = {}
    for db in args.databases:
        folder = args.data / db
        if not (folder / "RECORDS").exists():
            console.print(f"[yellow]skipping {db}: no {folder / 'RECORDS'}[/yellow]")
            continue
        groups[db] = record_names(folder, args.records)
        for rec in groups[db]:
            results.per_record[f"{db}/{rec}"] = bench_record(folder / rec, args.detectors, args.chunk_ms, results)
            console.log(f"{db}/{rec} done")
    print_tables(console, results, groups, args.detectors)
    summary: dict[str, object] = {"chunk_ms": args.chunk_ms, "match_window_s": BEAT_MATCH_WINDOW_S, "edge_s": EDGE_S}
    if results.latencies_s:
        lat = np.asarray(results.latencies_s)
        summary["latency_s"] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                "max": float(lat.max()), "searchback_fraction": results.searchback / lat.size}
        console.print(f"ours: detection latency p50 {summary['latency_s']['p50'] * 1e3:.0f} ms, "
                      f"p99 {summary['latency_s']['p99'] * 1e3:.0f} ms, max {lat.max() * 1e3:.0f} ms after the R "
                      f"peak ({args.chunk_ms:g} ms chunks); {results.searchback} of {lat.size} beats by search-back")
    summary["pooled"] = {
        db: {det: results.pooled(det, [f"{db}/{n}" for n in names]).as_dict() for det in args.detectors}
        for db, names in groups.items()
    }
    summary["per_record"] = {
        key: {det: s.as_dict() for det, s in scores.items()} for key, scores in results.per_record.items()
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
        console.print(f"wrote {args.json}")
        if results.latencies_s:
            png = plot_latency_histogram(np.asarray(results.latencies_s) * 1e3, args.json.with_suffix(".png"),
                                         "ours: detection latency after the R peak (ms)")
            console.print(f"wrote {png}")


if __name__ == "__main__":
    main()
