"""Speed of the edge's streaming beat detector against other QRS detectors, on the same records in one run.

Every detector gets the same whole record (MIT-BIH: 30 min, 2 leads, 360 Hz) and is timed with
``time.process_time`` (CPU seconds of this process: the box is shared, wall time would count other jobs), best of
``--repeats``; speed is record duration / CPU time (× real time), pooled over the records:

* ``ours 40 ms``: :func:`edge.detection.beats.detect_record` fed in 40 ms chunks (the live path: resampling to
  250 Hz included, both leads); ``ours 1 chunk``: the same fed in one chunk;
* ``xqrs``: ``wfdb.processing.XQRS`` on lead 0;
* ``neurokit2 pantompkins``: ``nk.ecg_clean`` then ``nk.ecg_peaks``, both ``method="pantompkins1985"``, lead 0;
* ``sleepecg``: ``sleepecg.detect_heartbeats`` (its C backend) on lead 0, when sleepecg is installed.

``--baseline REV`` also times ``detect_record`` of git revision ``REV`` (exported with ``git archive`` to a
temporary folder, run in a subprocess per record, interleaved with the current code) and checks that both give
the same beats (sample, search-back flag and latency).

Usage::

    python bench/detector_speed.py --baseline ab28613 --json bench/results/detector_speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.detection.beats import detect_record
from offline.records import read_record

ROOT = Path(__file__).resolve().parent.parent

# run in a subprocess with the baseline tree first on sys.path: CPU seconds (best of N) at 40 ms and one chunk
_BASELINE_CODE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from edge.detection.beats import detect_record
signal, fs, repeats = np.load(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
out = {}
for name, chunk in (("chunk", max(1, round(0.04 * fs))), ("whole", None)):
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        beats = detect_record(signal, fs, chunk_samples=chunk)
        best = min(best, time.process_time() - t)
    out[name] = best
    if chunk:
        out["beats"] = [[b.sample, bool(b.searchback), round(b.latency_s, 9)] for b in beats]
print(json.dumps(out))
"""


def cpu_seconds(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best CPU time (s) of ``repeats`` calls of ``run`` and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        result = run()
        best = min(best, time.process_time() - t)
    return best, result


def others(lead0: np.ndarray, fs_hz: float) -> dict[str, Callable[[], object]]:
    """The reference detectors available here, on lead 0 (mV)."""
    from wfdb.processing import XQRS

    def xqrs() -> object:
        detector = XQRS(sig=lead0, fs=fs_hz)
        detector.detect(verbose=False)
        return detector.qrs_inds

    def pantompkins() -> object:
        import neurokit2 as nk

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cleaned = nk.ecg_clean(lead0, sampling_rate=fs_hz, method="pantompkins1985")
            return nk.ecg_peaks(cleaned, sampling_rate=fs_hz, method="pantompkins1985")[1]["ECG_R_Peaks"]

    runners: dict[str, Callable[[], object]] = {"xqrs": xqrs, "neurokit2 pantompkins": pantompkins}
    if importlib.util.find_spec("sleepecg") is not None:
        import sleepecg

        runners["sleepecg"] = lambda: sleepecg.detect_heartbeats(lead0, fs_hz)
    return runners


def export_revision(rev: str, folder: Path) -> Path:
    """``git archive`` of ``edge/`` at ``rev`` into ``folder``; returns ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "edge"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--records", nargs="*", default=None, help="record names (default: all in RECORDS)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per detector and record")
    parser.add_argument("--baseline", default=None, help="git revision whose detect_record is timed as well")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    console = Console()
    if not (args.data / "RECORDS").exists():
        console.print(f"[red]no {args.data / 'RECORDS'}[/red]")
        raise SystemExit(2)
    names = [n for n in (args.data / "RECORDS").read_text().split() if args.records is None or n in args.records]
    seconds: dict[str, float] = {}
    duration_s = 0.0
    mismatches: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = export_revision(args.baseline, Path(tmp)) if args.baseline else None
        for name in names:
            record = read_record(args.data / name)
            signal = np.asarray(record.signal_mv, dtype=np.float64)
            fs = record.fs_hz
            duration_s += record.duration_s
            chunk = max(1, round(0.04 * fs))
            runs: dict[str, Callable[[], object]] = {
                "ours 40 ms": lambda s=signal, f=fs, c=chunk: detect_record(s, f, chunk_samples=c),
                "ours 1 chunk": lambda s=signal, f=fs: detect_record(s, f),
                **others(np.ascontiguousarray(signal[:, 0]), fs),
            }
            results = {}
            for label, run in runs.items():
                seconds[label] = seconds.get(label, 0.0) + (t := cpu_seconds(run, args.repeats))[0]
                results[label] = t[1]
            if tree is not None:
                np.save(Path(tmp) / "signal.npy", signal)
                out = subprocess.run([sys.executable, "-c", _BASELINE_CODE, str(tree), str(Path(tmp) / "signal.npy"),
                                      str(fs), str(args.repeats)], check=True, capture_output=True, text=True)
                base = json.loads(out.stdout)
                for key, label in (("chunk", f"{args.baseline} 40 ms"), ("whole", f"{args.baseline} 1 chunk")):
                    seconds[label] = seconds.get(label, 0.0) + base[key]
                ours = [[b.sample, bool(b.searchback), round(b.latency_s, 9)] for b in results["ours 40 ms"]]
                if ours != base["beats"]:
                    mismatches.append(name)
            console.log(f"{name} done")
    table = Table(title=f"QRS detector speed: {len(names)} records, {duration_s / 3600:.1f} h, CPU time best of "
                        f"{args.repeats}")
    for col in ("detector", "CPU s", "× real time", "µs per 40 ms chunk"):
        table.add_column(col, justify="right")
    n_chunks = duration_s / 0.04
    summary: dict[str, object] = {"records": names, "duration_s": duration_s, "repeats": args.repeats,
                                  "detectors": {}}
    for label, s in seconds.items():
        per_chunk = f"{s / n_chunks * 1e6:.1f}" if "40 ms" in label else "-"
        table.add_row(label, f"{s:.2f}", f"{duration_s / s:.0f}", per_chunk)
        summary["detectors"][label] = {"cpu_s": s, "x_realtime": duration_s / s}
    console.print(table)
    if args.baseline:
        summary["baseline"] = args.baseline
        summary["beats_differ_from_baseline"] = mismatches
        console.print(f"beats identical to {args.baseline} on {len(names) - len(mismatches)} of {len(names)} records"
                      + (f" (differ: {mismatches})" if mismatches else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
        console.print(f"wrote {args.json}")
    if mismatches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
