"""Live delineation accuracy: beats streamed through the edge (MQTT, the shipped wave-seg engine) vs manual waves.

Each record plays as one simulated device through a real broker into an in-process :class:`edge.app.EdgeApp` that
loads only the segmentation engine (the classifier plays no part in the boundaries); the published beat messages
(``waves``, ``intervals_ms``) are scored against the reference waves the simulator publishes on ``sim/<dev>/truth``:

* **QTDB** (``../shared/data/qtdb``): ``.q1c`` (cardiologist 1) marks P / QRS / T onset, peak and offset on ~30
  beats of each record's last 5 minutes, not tied to one lead. The edge segments its default lead (MLII, else V5,
  V2, else the first). To save time each record is cut to its annotated part plus ``--qtdb-lead-in-s`` (30 s) of
  detector warm-up before it (written as a temporary WFDB record) and replayed at ``--qtdb-speed`` (10x: the
  scheduler queue must not overflow, which would publish beats without waves).
* **LUDB** (``../shared/data/ludb``, 160 10 s 12-lead records): per-lead marks; the edge segments lead II, scored
  against the ``.ii`` marks, all records at once at maximum speed. The wave-seg engine was trained on LUDB, so the
  numbers are given for all records and for the held-out **test** records of the training split (seed 0:
  ``train.data.ludb.split(names, 0, 0.2, 0.1)``) separately; only the test numbers are honest.

Matching: every reference QRS (peak mark) is a reference beat; reference P waves are attached to the next QRS,
T waves to the previous one. Reference beats are matched one-to-one to published beats (R peak ``time``) within
150 ms by :func:`offline.scoring.match_pairs` (EC57: each reference, in time order, takes the nearest free one).
Reference beats whose centred segmentation window (half the engine's window each side of R: 1.6 s at 800 samples)
does not fit in the record are left out, or those within ``--ref-margin-s`` of either end when that is longer (to
score engines with shorter windows on the same beats as the 800-sample one), as are published beats with quality
``stream_end``. For each boundary (P / QRS / T onset and offset) the
error is published − reference (ms); a boundary is **found** when the matched beat has that wave and the error is
within 150 ms. Reported: share found (of all reference boundaries, missed beats and waves counted as not found), share
within 40 ms, and mean ± sd of the found errors; QT (QRS onset → T offset) error mean ± sd where both have a QT.

Usage::

    .venv/bin/python bench/delineation.py --json bench/results/delineation.json
    .venv/bin/python bench/delineation.py --ludb-count 40 --datasets ludb
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb
from rich.console import Console
from rich.table import Table

from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.inference.manifest import Manifest
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings
from offline.collector import Collector
from offline.plots import plot_error_boxes
from offline.records import read_annotations, read_record
from offline.scoring import match_pairs
from simulator.replay import Replayer
from simulator.sources import ReplaySource, wfdb_records
from train.data import ludb as ludb_data

ROOT = Path(__file__).resolve().parent.parent

MATCH_S = 0.15
NEAR_S = 0.04
WAVES = ("P", "QRS", "T")
BOUNDARIES = tuple((w, side) for w in WAVES for side in ("on", "off"))
EXCLUDED_QUALITY = ("stream_end",)


@dataclass
class RefBeat:
    """One reference beat: QRS peak and the boundaries of its waves (s, device clock; None: not marked/absent)."""

    record: str
    r_s: float
    waves: dict[str, dict[str, float | None] | None] = field(default_factory=dict)


@dataclass
class Scores:
    """Errors (ms) per boundary and QT, and the counts behind the shares."""

    n_ref_beats: int = 0
    n_matched_beats: int = 0
    n_ref: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # all errors with a wave
    qt_errors: list[float] = field(default_factory=list)
    extra_p: int = 0       # published P where the reference beat has none
    no_ref_p: int = 0      # matched reference beats without a P wave

    def summary(self) -> dict:
        out: dict[str, object] = {"ref_beats": self.n_ref_beats, "matched_beats": self.n_matched_beats,
                                  "beat_match_pct": pct(self.n_matched_beats, self.n_ref_beats)}
        for wave, side in BOUNDARIES:
            key = f"{wave}_{side}"
            err = np.asarray(self.errors[key], dtype=float)
            found = err[np.abs(err) <= MATCH_S * 1e3]
            out[key] = {
                "n_ref": self.n_ref[key],
                "within_150_pct": pct(found.size, self.n_ref[key]),
                "within_40_pct": pct(int((np.abs(err) <= NEAR_S * 1e3).sum()), self.n_ref[key]),
                "mean_ms": rnd(found.mean()) if found.size else None,
                "sd_ms": rnd(found.std(ddof=1)) if found.size > 1 else None,
                "mae_ms": rnd(np.abs(found).mean()) if found.size else None,
            }
        qt = np.asarray(self.qt_errors, dtype=float)
        out["QT"] = {"n": int(qt.size), "mean_ms": rnd(qt.mean()) if qt.size else None,
                     "sd_ms": rnd(qt.std(ddof=1)) if qt.size > 1 else None,
                     "mae_ms": rnd(np.abs(qt).mean()) if qt.size else None,
                     "within_40_pct": pct(int((np.abs(qt) <= 40).sum()), qt.size)}
        out["P_published_without_reference_P"] = {"beats_without_ref_P": self.no_ref_p, "with_published_P":
                                                  self.extra_p}
        return out


def pct(k: int, n: int) -> float | None:
    return round(100.0 * k / n, 1) if n else None


def rnd(x: float) -> float:
    return round(float(x), 1)


# ---------------------------------------------------------------------------------------------- reference
def ref_beats(truth: dict, lead: str | None, pre_s: float, post_s: float) -> list[RefBeat]:
    """Reference beats of one truth message (waves of ``lead``, or all when the marks are not per lead)."""
    waves = [w for w in truth["waves"] if lead is None or w["lead"] in (None, lead)]
    qrs = sorted((w for w in waves if w["wave"] == "QRS"), key=lambda w: w["peak"])
    peaks = np.array([w["peak"] for w in qrs])
    beats = [RefBeat(truth["record"], w["peak"], {"P": None, "QRS": {"on": w["on"], "off": w["off"]}, "T": None})
             for w in qrs]
    if not beats:
        return []
    for w in waves:
        if w["wave"] == "P":
            k = int(np.searchsorted(peaks, w["peak"]))          # next QRS
            if k < len(beats) and peaks[k] - w["peak"] < 0.5:
                beats[k].waves["P"] = {"on": w["on"], "off": w["off"]}
        elif w["wave"] == "T":
            k = int(np.searchsorted(peaks, w["peak"])) - 1      # previous QRS
            if k >= 0 and w["peak"] - peaks[k] < 0.9:
                beats[k].waves["T"] = {"on": w["on"], "off": w["off"]}
    t0, end = truth["t0"], truth["t0"] + truth["duration_s"]
    return [b for b in beats if t0 + pre_s <= b.r_s <= end - post_s]


def score(refs: list[RefBeat], published: list[dict], scores: Scores) -> None:
    """Match one device's reference beats to its published beats and add the errors to ``scores``."""
    pub = [b for b in published if b.get("quality") not in EXCLUDED_QUALITY]
    # the repo's one matcher (EC57, one-to-one) on µs integers
    ref_i, pub_i = match_pairs(np.round(np.array([r.r_s for r in refs]) * 1e6),
                               np.round(np.array([b["time"] for b in pub]) * 1e6), MATCH_S * 1e6)
    matched = dict(zip(ref_i.tolist(), pub_i.tolist(), strict=True))
    for i, ref in enumerate(refs):
        scores.n_ref_beats += 1
        beat = pub[matched[i]] if i in matched else None
        if beat is not None:
            scores.n_matched_beats += 1
        for wave, side in BOUNDARIES:
            rw = ref.waves.get(wave)
            if rw is None or rw.get(side) is None:
                continue
            key = f"{wave}_{side}"
            scores.n_ref[key] += 1
            pw = (beat or {}).get("waves", {}).get(wave)
            if pw is not None:
                scores.errors[key].append(1e3 * (pw[side] - rw[side]))
        if beat is None:
            continue
        if ref.waves.get("P") is None:
            scores.no_ref_p += 1
            scores.extra_p += beat["waves"].get("P") is not None
        rq, rt = ref.waves["QRS"], ref.waves.get("T")
        qt = (beat.get("intervals_ms") or {}).get("QT")
        if qt is not None and rt is not None and rq.get("on") is not None and rt.get("off") is not None:
            scores.qt_errors.append(qt - 1e3 * (rt["off"] - rq["on"]))


# ---------------------------------------------------------------------------------------------- QTDB crop
def crop_qtdb(sources: list[ReplaySource], lead_in_s: float, out_dir: Path) -> list[ReplaySource]:
    """Cut each QTDB record to its ``.q1c``-annotated part plus ``lead_in_s`` before it (temporary WFDB records)."""
    cropped = []
    for src in sources:
        rec = read_record(src.path)
        samples, symbols = read_annotations(src.path, "q1c")
        fs = rec.fs_hz
        start = max(0, int(samples.min() - lead_in_s * fs))
        stop = min(rec.n_samples, int(samples.max() + 5 * fs))
        names = [lead if re.fullmatch(r"[A-Za-z0-9]+", lead) else f"ECG{i}" for i, lead in enumerate(rec.leads)]
        wfdb.wrsamp(src.name, fs=fs, units=["mV"] * len(names), sig_name=names,
                    p_signal=rec.signal_mv[start:stop].astype(np.float64), fmt=["16"] * len(names),
                    write_dir=str(out_dir))
        keep = (samples >= start) & (samples < stop)
        # wfdb writes only all-letter extensions: write .qc, then give it QTDB's name
        wfdb.wrann(src.name, "qc", samples[keep] - start, symbol=np.asarray(symbols)[keep].tolist(),
                   write_dir=str(out_dir))
        (out_dir / f"{src.name}.qc").rename(out_dir / f"{src.name}.q1c")
        cropped.append(ReplaySource(name=src.name, path=out_dir / src.name))
    return cropped


# ---------------------------------------------------------------------------------------------- run
def stream(sources: list[ReplaySource], seg_leads: tuple[str, ...], speed: float, prefix: str,
           engine: Path, console: Console) -> tuple[dict[str, dict], dict[str, list[dict]], dict]:
    """Replay ``sources`` (one device each) through a live edge; truth and beat messages per device, edge health."""
    with EmbeddedBroker(prefer="mosquitto-only") as broker:
        settings = MqttSettings(broker.address)
        collector = Collector(settings, (proto.output_subscription("beats"), proto.TRUTH_SUBSCRIPTION,
                                         proto.output_subscription("status")))
        config = EdgeConfig(mqtt=settings, node="delineation", engines=(engine,), seg_leads=seg_leads,
                            stale_after_s=10.0)
        app = EdgeApp(config).start()
        try:
            if not app.wait_connected(10):
                raise RuntimeError("edge did not connect")
            t = time.monotonic()
            summary = Replayer(sources, settings, devices=len(sources), speed=speed, device_prefix=prefix,
                               device_names="record").run()
            console.log(f"{prefix}: {len(sources)} records, {summary.device_seconds:.0f} s each on average, "
                        f"replayed in {time.monotonic() - t:.0f} s")
            devices = [f"{prefix}-{s.name}" for s in sources]

            def all_stale() -> bool:
                return all(any(m.get("state") == "stale" for m in collector.get(proto.status_topic(d)))
                           for d in devices)

            if not collector.wait_for(all_stale, timeout_s=120):
                console.print("[yellow]not every device went stale in time; scoring what arrived[/yellow]")
            time.sleep(0.5)
            health = app.health("online")
        finally:
            app.stop()
            collector.close()
    truths = {d: collector.get(proto.truth_topic(d))[0] for d in devices if collector.get(proto.truth_topic(d))}
    beats = {d: collector.get(proto.beats_topic(d)) for d in devices}
    return truths, beats, health


def evaluate(truths: dict[str, dict], beats: dict[str, list[dict]], lead: str | None, pre_s: float,
             post_s: float, groups: dict[str, set[str]]) -> tuple[dict[str, dict], dict[str, Scores]]:
    """Summary and raw scores of each record group (``groups``: ``{"all": names, "test": names}``)."""
    out, raw = {}, {}
    for group, names in groups.items():
        scores = raw[group] = Scores()
        for device, truth in truths.items():
            if truth["record"] in names:
                score(ref_beats(truth, lead, pre_s, post_s), beats.get(device, []), scores)
        quality: dict[str, int] = defaultdict(int)
        for device, truth in truths.items():
            if truth["record"] in names:
                for b in beats.get(device, []):
                    quality[str(b.get("quality"))] += 1
        out[group] = scores.summary() | {"records": len([t for t in truths.values() if t["record"] in names]),
                                         "published_quality": dict(quality)}
    return out, raw


# ---------------------------------------------------------------------------------------------- report
def print_table(console: Console, results: dict[str, dict]) -> None:
    table = Table(title="Live delineation through the edge: published − reference (ms); found = within 150 ms")
    for col in ("data", "records", "beats matched", "boundary", "n ref", "found %", "≤40 ms %", "mean ± sd ms",
                "MAE ms"):
        table.add_column(col, justify="left" if col in ("data", "boundary") else "right")
    for name, res in results.items():
        first = True
        for wave, side in BOUNDARIES:
            b = res[f"{wave}_{side}"]
            ms = "-" if b["mean_ms"] is None else f"{b['mean_ms']:+.1f} ± {b['sd_ms'] or 0:.1f}"
            table.add_row(name if first else "", str(res["records"]) if first else "",
                          f"{res['matched_beats']}/{res['ref_beats']}" if first else "", f"{wave} {side}",
                          str(b["n_ref"]), f"{b['within_150_pct']}", f"{b['within_40_pct']}", ms,
                          f"{b['mae_ms']}")
            first = False
        qt = res["QT"]
        ms = "-" if qt["mean_ms"] is None else f"{qt['mean_ms']:+.1f} ± {qt['sd_ms'] or 0:.1f}"
        table.add_row("", "", "", "QT interval", str(qt["n"]), "", f"{qt['within_40_pct']}", ms, f"{qt['mae_ms']}",
                      end_section=True)
    console.print(table)


def main() -> None:
    data = ROOT.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qtdb", type=Path, default=data / "qtdb")
    parser.add_argument("--ludb", type=Path, default=data / "ludb")
    parser.add_argument("--datasets", nargs="*", default=["qtdb", "ludb"], choices=["qtdb", "ludb"])
    parser.add_argument("--engine", type=Path, default=None,
                        help="segmentation engine (default: the shipped one in engines/)")
    parser.add_argument("--ludb-count", type=int, default=None, help="first N LUDB records (default: all 160)")
    parser.add_argument("--qtdb-speed", type=float, default=10.0, help="QTDB replay speed (x real time)")
    parser.add_argument("--qtdb-lead-in-s", type=float, default=30.0, help="signal kept before the first q1c mark")
    parser.add_argument("--qtdb-leads", default="", help="leads the edge segments on QTDB ('all', or a list; "
                                                         "default: the edge's default lead)")
    parser.add_argument("--ref-margin-s", type=float, default=None,
                        help="leave out reference beats closer than this to a record's start or end (s); beats "
                             "within half the engine's window (1.6 s at 800 samples) are always left out; give 1.6 "
                             "to score engines with shorter windows on the same beats as the 800-sample one")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    if args.ref_margin_s is not None and args.ref_margin_s < 0:
        parser.error(f"--ref-margin-s must be >= 0 s, got {args.ref_margin_s}")
    console = Console(width=160)
    # the checkout's engines/ folder: run as a script, bench/engines.py would shadow the installed `engines` package
    shipped = sorted(p.parent for p in (ROOT / "engines").glob("*/manifest.json"))
    engine = args.engine or next(p for p in shipped if Manifest.load(p).task == "segment")
    manifest = Manifest.load(engine)
    window_s = manifest.window_samples / manifest.fs_hz
    pre_s = post_s = max(window_s / 2, args.ref_margin_s or 0.0)
    results: dict[str, dict] = {}
    panels: dict[str, Scores] = {}
    health: dict[str, dict] = {}
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    t_start = time.monotonic()
    if "qtdb" in args.datasets:
        with tempfile.TemporaryDirectory(prefix="bench-qtdb-") as tmp:
            sources = crop_qtdb(wfdb_records(args.qtdb), args.qtdb_lead_in_s, Path(tmp))
            leads = tuple(x for x in args.qtdb_leads.split(",") if x)
            truths, beats, health["qtdb"] = stream(sources, leads, args.qtdb_speed, "qt", engine, console)
        names = {s.name for s in sources}
        res, raw = evaluate(truths, beats, None, pre_s, post_s, {"all": names})
        results[f"QTDB q1c ({len(names)})"] = res["all"]
        panels[f"QTDB q1c ({len(names)} records)"] = raw["all"]
    split = None
    if "ludb" in args.datasets:
        all_names = ludb_data.record_names(args.ludb)
        split = ludb_data.split(all_names, 0, 0.2, 0.1)
        names = all_names[: args.ludb_count] if args.ludb_count else all_names
        sources = wfdb_records(args.ludb, names=[f"data/{n}" for n in names])
        truths, beats, health["ludb"] = stream(sources, ("II",), math.inf, "ludb", engine, console)
        groups = {"all": set(names), "test": set(names) & set(split["test"]),
                  "train+val": set(names) - set(split["test"])}
        res, raw = evaluate(truths, beats, "II", pre_s, post_s, groups)
        panels[f"LUDB lead II, held-out test ({res['test']['records']} records)"] = raw["test"]
        results[f"LUDB II, held-out test ({res['test']['records']})"] = res["test"]
        results[f"LUDB II, train+val ({res['train+val']['records']})"] = res["train+val"]
        results[f"LUDB II, all ({res['all']['records']})"] = res["all"]
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(console, results)
    for name, h in health.items():
        seg = (h.get("engines") or {}).get("segment", {})
        console.print(f"{name}: edge rejected {h.get('rejected')}, segment windows {seg.get('windows')} "
                      f"(rejected {seg.get('rejected')}, failed {seg.get('failed')}, mean batch "
                      f"{seg.get('mean_batch')})")
    console.print(f"load average {load['start']} → {load['end']}; {time.monotonic() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "engine": {"name": manifest.name, "window_samples": manifest.window_samples, "fs_hz": manifest.fs_hz},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
            "match_s": MATCH_S, "near_s": NEAR_S, "excluded_window_s": [pre_s, post_s],
            "ludb_test_records": split["test"] if split else None,
            "loadavg": load, "results": results,
            "edge_health": {k: {kk: h.get(kk) for kk in ("rejected", "engines", "beats", "published")}
                            for k, h in health.items()},
        }, indent=2))
        png = plot_error_boxes({name: {f"{w} {side}": sc.errors[f"{w}_{side}"] for w, side in BOUNDARIES}
                                | {"QT": sc.qt_errors} for name, sc in panels.items()},
                               args.json.with_suffix(".png"), f"live delineation by the edge ({manifest.name})",
                               limit=MATCH_S * 1e3)
        console.print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
