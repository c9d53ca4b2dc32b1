"""Benchmark the shipped AAMI beat classifier (engines/beat-cls) on MIT-BIH, run the way the edge runs it.

Records: the six DS2 records here (100 103 105 200 210 232, the development test; never trained or selected on) and
the four DS1 validation records (118 124 215 220, used for the thresholds), plus paced 104 (outside the protocol:
its beats are Q; shown, not pooled). Two R-peak sources per record:

* ``edge``: R peaks from the edge's own streaming detector (:func:`edge.detection.beats.detect_record` on both
  leads of the record at 360 Hz), beat features (RR context, morphology against the dominant beat) from
  :func:`edge.interpret.beat_class.beat_features` of the detected beats, the code the edge runs; each detection
  is matched one-to-one to a reference beat within ±150 ms (EC57). A reference beat no detection matches is
  "missed" (a false negative of its class); a detection matching no reference beat is "extra" (a false positive
  of the class it is given);
* ``reference``: the ``.atr`` R peaks and their beat features (the classifier alone);
* ``pipeline``: the classes the edge publishes — the whole live pipeline offline (:func:`edge.pipeline.runner.
  run_recording`, what ``beatssl-edge detect`` runs) with every engine beside ``--engine`` (the shipped segmenter
  too), so the rhythm context rules are in: S during an AFIB episode is N (:mod:`edge.pipeline.interpretation`).
  ``pipeline, no AF rule`` undoes that one rule from the same run (a published N whose ``class_probs`` decide S).
  ``--no-pipeline`` skips it (~1 min per 30 min record on 2 cores).

Windows are cut from the preferred lead resampled to 250 Hz by the edge's streaming resampler and run through the
engine with ONNX Runtime (:func:`edge.inference.load_engine`), decided by the manifest's thresholds
(``argmax p / t``, :func:`edge.interpret.beat_class.decide`), then the edge's noise gate (both leads,
:func:`edge.interpret.beat_class.beat_unreadable`: an unreadable beat is Q). Each source is scored gated (what the
edge publishes) and ungated (``... ungated`` rows: the classifier's own decision), from the same run. Scores: gross
VEB and SVEB Se / +P, per record and pooled, 5-class confusion matrix (:func:`train.beat_metrics.ec57_scores`), over
all beats and with the first 5 minutes excluded (EC57's learning period). Cost: beats classified per second through
ONNX Runtime on one thread.

``--ds1`` adds all 22 DS1 records (the gate's tuning set; 18 of them trained the engine).

``--runs`` adds the pretrained-vs-scratch table from fine-tuning run folders (``metrics.json``: DS2 = their "test"
part, reference beats, PyTorch; ``model.pt``: the run's config).

Usage::

    python bench/beat_classes.py --engine engines/beat-cls --data ../shared/data \\
        --runs runs/beats/pre-100 runs/beats/scratch-100 runs/beats/pre-10 runs/beats/scratch-10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from edge.app import EdgeConfig, load_plan
from edge.detection.beats import detect_record
from edge.dsp.resample import StreamingResampler
from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ
from edge.inference import load_engine
from edge.inference.engine import Engine, to_probabilities
from edge.interpret.beat_class import (
    beat_features,
    beat_unreadable,
    decide,
    feature_columns,
    gate_classes,
    veto_ventricular,
)
from edge.interpret.beat_morphology import MORPHOLOGY_NAMES
from edge.pipeline.device_inference import InferencePlan
from edge.pipeline.runner import run_recording
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.plots import plot_confusion
from offline.records import read_record
from offline.scoring import BEAT_MATCH_WINDOW_S, match_pairs
from train.beat_metrics import confusion, ec57_scores
from train.data import mitdb
from train.data.rate import rescale_samples

LEARNING_S = 300.0
DEV_TEST = ("100", "103", "105", "200", "210", "232")
PACED = ("104",)
#: Published gross scores (percent) printed beside ours: (VEB Se, VEB +P, SVEB Se, SVEB +P).
BASELINES: dict[str, tuple[float, float, float, float]] = {
    "de Chazal 2004 (DS2, 22 records)": (77.7, 81.9, 75.9, 38.5),
    "open streaming peer, Rust (MITDB)": (95.8, 80.8, 29.2, 18.3),
}
TARGETS = (95.0, 95.0, 80.0, 70.0)
#: R-peak sources, each scored gated (as named) and ungated (``"<source> ungated"``).
SOURCES = ("edge", "reference")
#: The published classes (the whole pipeline), with and without the AF rule.
PIPELINE_SOURCES = ("pipeline", "pipeline, no AF rule")
_K = len(AAMI_CLASSES)


def match_index(ref: np.ndarray, test: np.ndarray, tol: float) -> np.ndarray:
    """For each reference beat (sorted), the index of the detection matched to it by
    :func:`offline.scoring.match_pairs` (the EC57 rule, ``± tol`` samples), or -1."""
    out = np.full(len(ref), -1, dtype=np.int64)
    ref_idx, test_idx = match_pairs(ref, test, tol)
    out[ref_idx] = test_idx
    return out


def classify(engine: Engine, signal_mv: np.ndarray, leads_mv: np.ndarray, r_internal: np.ndarray,
             r_times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AAMI class index of each beat (-1 where its window is not inside the signal), ungated and gated.

    Args:
        signal_mv: ``(n,)`` the engine's lead (mV, internal rate); leads_mv: ``(n, L)`` the noise gate's leads, the
            engine's first.
        r_internal: ``(k,)`` R peaks (internal samples); r_times_s: ``(k,)`` their times (s).
    """
    m = engine.manifest
    windows, inside = mitdb.beat_windows(signal_mv, r_internal, m.r_offset_samples, m.window_samples)
    columns = feature_columns(m.feature_names)
    features_all = beat_features(r_times_s, signal_mv, r_internal, INTERNAL_FS_HZ)
    features = features_all[:, columns].astype(np.float32)[inside]
    logits = engine.infer(windows[:, None, :], features=features)
    thresholds = m.threshold_vector
    pred = np.full(len(r_internal), -1, dtype=np.int64)
    probs = to_probabilities(logits, m.activation)
    morph = features_all[inside][:, feature_columns(MORPHOLOGY_NAMES)]
    pred[inside] = veto_ventricular(decide(probs, thresholds), probs, thresholds, morph, m.class_names)
    gated = gate_classes(pred, beat_unreadable(r_times_s, leads_mv, r_internal, INTERNAL_FS_HZ) & (pred >= 0),
                         m.class_names)
    return pred, gated


def record_matrices(engine: Engine, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Confusion matrices of one record: ``{source: {"all" | "after_5min": matrix}}`` for the sources :data:`SOURCES`
    (gated) and ``"<source> ungated"``, and ``"offsets_ms"``: detected minus reference R time of the matched beats
    (ms).

    The edge matrices are 6 x 6: the last row counts extra detections, the last column missed reference beats.
    """
    rec = read_record(path)
    beats = mitdb.read_beats(path)
    signal = beats.signal_mv
    ref_labels, ref_t = beats.labels, beats.r_times_s
    out: dict[str, dict[str, np.ndarray]] = {}

    order = [rec.leads.index(beats.lead), *(i for i in range(len(rec.leads)) if rec.leads[i] != beats.lead)]
    leads = StreamingResampler(rec.fs_hz, INTERNAL_FS_HZ, len(order)).push(rec.signal_mv[:, order])  # gate's leads
    late = ref_t >= LEARNING_S
    for suffix, pred in zip(("", " ungated"), classify(engine, signal, leads, beats.r_samples, ref_t)[::-1],
                            strict=True):
        out[f"reference{suffix}"] = {"all": confusion(ref_labels, pred),
                                     "after_5min": confusion(ref_labels[late], pred[late])}  # fmt: skip

    detected = detect_record(rec.signal_mv, rec.fs_hz)
    det_samples = np.array([b.sample for b in detected], dtype=np.int64)
    det_t = np.array([b.time_s for b in detected])
    det_preds = classify(engine, signal, leads, rescale_samples(det_samples, rec.fs_hz), det_t)
    ref_samples = np.round(ref_t * rec.fs_hz).astype(np.int64)
    match = match_index(ref_samples, det_samples, BEAT_MATCH_WINDOW_S * rec.fs_hz)
    for suffix, det_pred in zip(("", " ungated"), det_preds[::-1], strict=True):
        out[f"edge{suffix}"] = detection_matrices(ref_t, ref_labels, det_t, det_pred, match)
    hit = match >= 0
    out["offsets_ms"] = 1000.0 * (det_t[match[hit]] - ref_t[hit])
    return out


def detection_matrices(ref_t: np.ndarray, ref_labels: np.ndarray, det_t: np.ndarray, det_pred: np.ndarray,
                       match: np.ndarray) -> dict[str, np.ndarray]:
    """6 x 6 confusion matrices (``all`` / ``after_5min``) of classed detections matched to reference beats
    (``match``: the detection index of each reference beat, -1 none): the last row counts extra detections, the
    last column missed reference beats (and matched ones without a class, ``det_pred`` < 0)."""
    taken = np.zeros(len(det_t), dtype=bool)
    taken[match[match >= 0]] = True
    out = {}
    for key, keep_ref, keep_det in (("all", np.ones(len(ref_t), bool), np.ones(len(det_t), bool)),
                                    ("after_5min", ref_t >= LEARNING_S, det_t >= LEARNING_S)):  # fmt: skip
        m = np.zeros((_K + 1, _K + 1), dtype=np.int64)
        scored = keep_ref & (ref_labels >= 0)
        got = np.where(match >= 0, det_pred[np.maximum(match, 0)], _K)  # unmatched: missed (column K)
        got = np.where(got < 0, _K, got)  # matched, but not classified
        np.add.at(m, (ref_labels[scored], got[scored]), 1)
        extra = keep_det & ~taken & (det_pred >= 0)
        np.add.at(m, (np.full(extra.sum(), _K), det_pred[extra]), 1)
        out[key] = m
    return out


def pipeline_matrices(plan: InferencePlan, engines: dict[str, Engine], path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Confusion matrices of the classes the whole pipeline publishes on one record (``pipeline``) and of the same
    run without the AF rule (``pipeline, no AF rule``: a published N whose ``class_probs`` decide S is S)."""
    rec = read_record(path)
    beats = mitdb.read_beats(path)
    published = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)["beats"]
    det_t = np.array([b["time"] for b in published])
    det_samples = np.array([b["sample"] for b in published], dtype=np.int64)
    classes = np.array([AAMI_CLASSES.index(b["class"]) if b.get("class") in AAMI_CLASSES else -1 for b in published])
    manifest = engines["beat-classify"].manifest
    thresholds = manifest.threshold_vector
    undone = classes.copy()
    n_idx, s_idx = AAMI_CLASSES.index("N"), AAMI_CLASSES.index("S")
    for i, b in enumerate(published):
        if classes[i] == n_idx and b.get("class_probs"):
            probs = np.array([[b["class_probs"][c] for c in manifest.class_names]])
            if int(decide(probs, thresholds)[0]) == s_idx:
                undone[i] = s_idx
    ref_samples = np.round(beats.r_times_s * rec.fs_hz).astype(np.int64)
    match = match_index(ref_samples, det_samples, BEAT_MATCH_WINDOW_S * rec.fs_hz)
    return {"pipeline": detection_matrices(beats.r_times_s, beats.labels, det_t, classes, match),
            "pipeline, no AF rule": detection_matrices(beats.r_times_s, beats.labels, det_t, undone, match)}


def throughput(engine: Engine, n: int = 4096, repeats: int = 5) -> float:
    """Beats classified per second (engine on the thread count it was loaded with), batches of 256."""
    m = engine.manifest
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(n, 1, m.window_samples)).astype(np.float32)
    features = rng.normal(size=(n, len(m.feature_names))).astype(np.float32)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for lo in range(0, n, 256):
            engine.infer(windows[lo : lo + 256], features=features[lo : lo + 256])
        best = min(best, time.perf_counter() - t0)
    return n / best


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def scores_row(s: dict) -> list[str]:
    return [_pct(s["veb"]["se"]), _pct(s["veb"]["pp"]), _pct(s["sveb"]["se"]), _pct(s["sveb"]["pp"])]


def print_group(console: Console, title: str, per_record: dict[str, dict], source: str, key: str) -> dict:
    """Per-record and pooled table of one group of records; returns the pooled scores and matrix."""
    table = Table(title=title)
    for col in ("record", "beats", "VEB Se", "VEB +P", "SVEB Se", "SVEB +P"):
        table.add_column(col, justify="right")
    pooled = None
    for name, mats in per_record.items():
        m = mats[source][key]
        pooled = m.copy() if pooled is None else pooled + m
        s = ec57_scores(m)
        table.add_row(name, str(s["reference_beats"]), *scores_row(s))
    s = ec57_scores(pooled)
    table.add_row("gross", str(s["reference_beats"]), *scores_row(s), style="bold")
    for label, values in BASELINES.items():
        table.add_row(label, "", *[f"{v:.1f}" for v in values], style="dim")
    table.add_row("target", "", *[f">= {v:.0f}" for v in TARGETS], style="dim")
    console.print(table)
    return {"gross": s, "confusion": pooled.tolist(),
            "per_record": {n: ec57_scores(m[source][key]) for n, m in per_record.items()}}  # fmt: skip


def runs_table(console: Console, runs: list[Path]) -> dict:
    """Pretrained vs scratch: DS2 and DS1-val gross scores of fine-tuning runs (their metrics.json)."""
    table = Table(title="fine-tuning runs (reference beats, PyTorch): DS2 dev-test | DS1 val")
    cols = ("run", "init", "encoder", "labels", "seed", "DS2 VEB Se", "+P", "SVEB Se", "+P", "val VEB Se", "+P")
    cols += ("SVEB Se", "+P")
    for col in cols:
        table.add_column(col, justify="right")
    out = {}
    for run in runs:
        from train.checkpoint import read_checkpoint  # torch: only for this table

        if not (run / "metrics.json").is_file() or not (run / "model.pt").is_file():
            console.print(f"skipped {run}: not a finished fine-tuning run (no metrics.json and model.pt)")
            continue

        metrics = json.loads((run / "metrics.json").read_text())
        cfg = read_checkpoint(run / "model.pt")["meta"]["config"]
        test, val = metrics["test"], metrics["val"]
        init = "Beat-SSL" if cfg.get("run", {}).get("init") else "scratch"
        fraction = cfg.get("data", {}).get("label_fraction", 1.0)
        encoder = "frozen" if cfg["optim"]["freeze_encoder"] else "trained"
        key = f"{run.parent.name}/{run.name}"
        seed = cfg["run"]["seed"]
        table.add_row(key, init, encoder, f"{100 * fraction:.0f} %", str(seed), *scores_row(test), *scores_row(val))
        out[key] = {
            "init": init,
            "encoder": encoder,
            "label_fraction": fraction,
            "seed": seed,
            "ds2": {k: test[k] for k in ("veb", "sveb")},
            "val": {k: val[k] for k in ("veb", "sveb")},
            "train_seconds": metrics["train_seconds"],
        }
    console.print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=Path, default=Path("engines/beat-cls"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding mitdb/")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="fine-tuning run folders (metrics.json)")
    parser.add_argument("--ds1", action="store_true", help="also score all 22 DS1 records (the gate's tuning set)")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="skip the pipeline source (the published classes; ~1 min per 30 min record)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/beat_classes.json"))
    args = parser.parse_args()
    console = Console(width=140)
    engine = load_engine(args.engine, backend="onnxruntime", threads=1)
    m = engine.manifest
    try:
        feature_columns(m.feature_names)
    except ValueError as exc:
        raise SystemExit(f"error: {args.engine}: {exc}") from None
    if tuple(m.class_names) != AAMI_CLASSES:
        raise SystemExit(f"error: {args.engine} is not an AAMI beat classifier (classes {list(m.class_names)})")
    sources = SOURCES if args.no_pipeline else (*SOURCES, *PIPELINE_SOURCES)
    plan, engines = None, {}
    if not args.no_pipeline:
        folders = tuple(sorted({args.engine, *(p.parent for p in args.engine.parent.glob("*/manifest.json"))}))
        try:
            plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=folders,
                                                 backend="onnxruntime"))
        except (ValueError, OSError) as exc:
            raise SystemExit(f"error: the pipeline's engines ({', '.join(map(str, folders))}): {exc}") from None
    groups = {"DS2 dev-test": DEV_TEST, "DS1 val": mitdb.VAL_RECORDS}
    if args.ds1:
        groups["DS1"] = mitdb.DS1
    results: dict = {"engine": str(args.engine), "window_samples": m.window_samples,
                     "r_offset_samples": m.r_offset_samples, "fs_hz": INTERNAL_FS_HZ,
                     "thresholds": m.thresholds, "groups": {}}  # fmt: skip
    for group, names in groups.items():
        per_record = {n: record_matrices(engine, args.data / "mitdb" / n) for n in names}
        if plan is not None:
            for n in track(names, description=f"{group}: the whole pipeline"):
                per_record[n].update(pipeline_matrices(plan, engines, args.data / "mitdb" / n))
        results["groups"][group] = {}
        for source in (*sources, *(f"{src} ungated" for src in SOURCES)):
            for key in ("all", "after_5min") if source in sources else ("all",):
                title = f"{group}: {source} R peaks, {'all beats' if key == 'all' else 'first 5 min excluded'}"
                results["groups"][group][f"{source}/{key}"] = print_group(console, title, per_record, source, key)
        offsets = np.abs(np.concatenate([per_record[n]["offsets_ms"] for n in names]))
        results["groups"][group]["edge_r_offset_ms"] = {"median": float(np.median(offsets)),
                                                        "p95": float(np.percentile(offsets, 95))}  # fmt: skip
        console.print(
            f"{group}: edge R peaks vs reference, |offset| median {np.median(offsets):.1f} ms, "
            f"95th percentile {np.percentile(offsets, 95):.1f} ms (1 sample at 250 Hz = 4 ms)"
        )
    for name in PACED:  # outside the AAMI protocol: what the classifier calls a paced record's beats
        mats = record_matrices(engine, args.data / "mitdb" / name)
        called = dict(zip(AAMI_CLASSES, mats["reference"]["all"].sum(axis=0).tolist(), strict=True))
        ungated = dict(zip(AAMI_CLASSES, mats["reference ungated"]["all"].sum(axis=0).tolist(), strict=True))
        results["paced"] = {name: {"reference_beats_called": called, "reference_beats_called_ungated": ungated,
                                   "edge_confusion": mats["edge"]["all"].tolist()}}  # fmt: skip
        console.print(f"paced {name} (beats are Q, not scored by AAMI): its reference beats are called {called} "
                      f"(ungated {ungated})")
    dev = np.asarray(results["groups"]["DS2 dev-test"]["edge/all"]["confusion"])
    png = args.json.with_name("beat_classes_confusion.png")
    labels = (*AAMI_CLASSES, "missed/extra")
    plot_confusion(dev, labels, png, title="DS2 dev-test, edge R peaks (rows reference, last row extra detections)")
    results["beats_per_s_one_thread"] = throughput(engine)
    console.print(f"cost: {results['beats_per_s_one_thread']:.0f} beats/s on one ONNX Runtime thread")
    if args.runs:
        results["runs"] = runs_table(console, args.runs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=float))
    console.print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
