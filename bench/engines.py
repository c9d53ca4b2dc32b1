"""Engine throughput and latency per backend and batch size, against the same model in PyTorch eager.

For each runner (PyTorch eager, ONNX Runtime, TensorRT where available) and each batch size, calls ``infer`` on real
LUDB windows (mV) for ``--seconds`` and reports windows/s and the per-call latency p50 / p99 (ms). Every runner gets
the same raw windows and does the same work per call: normalise (numpy) + forward. The ratio column is the
runner's windows/s over PyTorch eager's at the same batch size, measured in the same run.

Examples::

    .venv/bin/python bench/engines.py --checkpoint runs/cpu-small/segment/model.pt --json bench/engines-seg.json
    .venv/bin/python bench/engines.py --random classify --threads 2      # untrained default architecture
    .venv/bin/python bench/engines.py --checkpoint runs/.../model.pt --engine engines/rhythm-cls  # a built engine
    .venv/bin/python bench/engines.py --compare engines/wave-seg runs/int8/wave-seg-int8 --batches 1,8,64 \
        --json bench/results/engines-int8.json                                             # fp32 vs int8 folder

``--compare BASE OTHER`` times two engine folders on ONNX Runtime instead (no PyTorch baseline; two segment engines
may have different windows, e.g. one re-windowed by ``train quantize-engine --window-samples``, each timed on real
windows of its own length, so windows/s then counts windows of different lengths): per batch size,
``--rounds`` alternating turns of ``--seconds / --rounds`` each (BASE, OTHER, BASE, ...), latencies pooled per
engine, so that load from other processes on the box falls on both alike; the ratio column is OTHER's windows/s
over BASE's. For segment engines it then scores both on the held-out LUDB test records
(:func:`train.engine_eval.segment_engine_report`: Dice, boundary error mean and sd) and says whether OTHER meets
the int8 shipping rule of ``docs/engines.md`` (:data:`CANDIDATE_MAX_SD_DELTA_MS`, :data:`CANDIDATE_MAX_DICE_DROP`,
:data:`CANDIDATE_MIN_SPEEDUP_B1`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.ecg import LEADS_12, PTBXL_SUPERCLASSES, WAVE_CLASSES
from edge.inference import load_engine, tensorrt_unavailable_reason
from edge.inference.manifest import Manifest, Normalisation, normalise
from offline.plots import plot_latency_histogram

DEFAULT_BATCHES = (1, 8, 64, 256)
#: ``--compare`` shipping rule for a cheaper engine (docs/engines.md): every P / QRS / T onset and offset error sd on
#: LUDB test at most this much above BASE's (ms), every wave's Dice at most this much below, and at least this many
#: times BASE's windows/s at batch 1.
CANDIDATE_MAX_SD_DELTA_MS = 1.0
CANDIDATE_MAX_DICE_DROP = 0.005
CANDIDATE_MIN_SPEEDUP_B1 = 1.5
WAVES = ("P", "QRS", "T")


def time_runner(infer: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, seconds: float) -> dict[str, float]:
    """Call ``infer(windows)`` repeatedly for about ``seconds`` (after 2 warm-up calls, at least 5 timed calls).

    Returns:
        ``windows_per_s``, ``p50_ms``, ``p99_ms`` (latency of one call) and ``calls``.
    """
    for _ in range(2):
        infer(windows)
    latencies = []
    start = time.perf_counter()
    while len(latencies) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        infer(windows)
        latencies.append(time.perf_counter() - t0)
    lat = np.asarray(latencies)
    return {
        "windows_per_s": len(windows) * len(lat) / float(lat.sum()),
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
        "calls": len(lat),
        "latencies_ms": (1e3 * lat).tolist(),
    }


def time_interleaved(
    runners: dict[str, Callable[[np.ndarray], np.ndarray]], windows: dict[str, np.ndarray], seconds: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """:func:`time_runner` for each runner in turn on its own ``windows[name]`` (the same number of rows for every
    runner), ``rounds`` times (``seconds / rounds`` per turn), latencies pooled per runner: the same keys as
    :func:`time_runner`, per runner name."""
    pooled: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, infer in runners.items():
            pooled[name] += time_runner(infer, windows[name], seconds / rounds)["latencies_ms"]
    out = {}
    for name, values in pooled.items():
        lat = np.asarray(values)
        out[name] = {
            "windows_per_s": 1e3 * len(windows[name]) * len(lat) / float(lat.sum()),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "calls": len(lat),
            "latencies_ms": values,
        }
    return out


def accuracy_rows(base: dict, other: dict) -> list[dict]:
    """Per wave and boundary: Dice, error mean and sd (ms) of BASE and OTHER (segment reports) and the deltas."""
    rows = []
    for wave in WAVES:
        for side in ("onset", "offset"):
            b, o = base[wave][side], other[wave][side]
            rows.append({
                "wave": wave, "boundary": side, "dice_base": base[wave]["dice"], "dice_other": other[wave]["dice"],
                "mean_ms_base": b["err_mean_ms"], "sd_ms_base": b["err_sd_ms"], "f1_base": b["f1"],
                "mean_ms_other": o["err_mean_ms"], "sd_ms_other": o["err_sd_ms"], "f1_other": o["f1"],
                "sd_delta_ms": o["err_sd_ms"] - b["err_sd_ms"],
            })  # fmt: skip
    return rows


def candidate_problems(rows: list[dict], speedup_b1: float | None) -> list[str]:
    """Why OTHER fails the shipping rule (empty: it is a candidate); ``speedup_b1`` None when batch 1 was not run."""
    problems = [
        f"{r['wave']} {r['boundary']} sd +{r['sd_delta_ms']:.2f} ms > {CANDIDATE_MAX_SD_DELTA_MS} ms"
        for r in rows
        if r["sd_delta_ms"] > CANDIDATE_MAX_SD_DELTA_MS
    ]
    problems += [
        f"{r['wave']} Dice {r['dice_other']:.4f} < {r['dice_base']:.4f} - {CANDIDATE_MAX_DICE_DROP}"
        for r in rows[::2]
        if r["dice_base"] - r["dice_other"] > CANDIDATE_MAX_DICE_DROP
    ]
    if speedup_b1 is None:
        problems.append("batch 1 not timed")
    elif speedup_b1 < CANDIDATE_MIN_SPEEDUP_B1:
        problems.append(f"batch 1 speed-up {speedup_b1:.2f} < {CANDIDATE_MIN_SPEEDUP_B1}")
    return problems


def compare(args: argparse.Namespace, batches: list[int], data_dir: Path) -> None:
    """``--compare BASE OTHER``: interleaved ONNX Runtime timing of two engine folders, LUDB test accuracy of both
    (segment engines), printed and written to ``--json``."""
    from train.engine_eval import segment_engine_report

    folders = dict(zip(("base", "other"), args.compare, strict=True))
    engines = {k: load_engine(f, "onnxruntime", threads=args.threads) for k, f in folders.items()}
    base, other = engines["base"].manifest, engines["other"].manifest
    same = base.input_shape == other.input_shape or (base.task == "segment" and base.channels == other.channels)
    if base.task != other.task or not same:
        raise SystemExit(f"error: {args.compare[1]} is not the same kind of engine as {args.compare[0]}")
    windows = {k: bench_windows(e.manifest, max(batches), data_dir) for k, e in engines.items()}
    rows = []
    latencies: dict[tuple[str, int], list[float]] = {}
    for batch in batches:
        timed = time_interleaved(
            {k: e.infer for k, e in engines.items()}, {k: w[:batch] for k, w in windows.items()}, args.seconds,
            args.rounds,
        )
        for key, r in timed.items():
            latencies[(key, batch)] = r.pop("latencies_ms")
            ratio = r["windows_per_s"] / timed["base"]["windows_per_s"]
            rows.append({"engine": key, "folder": str(folders[key]), "batch": batch, **r, "vs_base": ratio})
    print(
        f"{base.task} engines {args.compare[0]} (base, onnx {base.onnx_precision}, input (B, {base.channels}, "
        f"{base.window_samples})) vs {args.compare[1]} (onnx {other.onnx_precision}, input (B, {other.channels}, "
        f"{other.window_samples})), ONNX Runtime, threads "
        f"{args.threads}, {args.rounds} alternating rounds, load average {os.getloadavg()[0]:.2f}"
    )
    print("| engine | batch | windows/s | p50 ms | p99 ms | vs base |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['batch']} | {r['windows_per_s']:.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['vs_base']:.2f} |"
        )
    result: dict = {
        "base": str(folders["base"]),
        "other": str(folders["other"]),
        "task": base.task,
        "onnx_precision": {"base": base.onnx_precision, "other": other.onnx_precision},
        "window_samples": {"base": base.window_samples, "other": other.window_samples},
        "threads": args.threads,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "machine": f"{platform.machine()} {platform.processor() or ''} ({len(os.sched_getaffinity(0))} CPUs)",
        "load_average_1min": os.getloadavg()[0],
        "versions": {"onnxruntime": ort.__version__},
        "rows": rows,
    }
    if base.task == "segment":
        reports = {k: segment_engine_report(e, "test", data_dir) for k, e in engines.items()}
        acc = accuracy_rows(reports["base"], reports["other"])
        print(
            f"LUDB held-out test ({reports['base']['records']} records, {reports['base']['leads']} leads): "
            "error = engine - reference (ms), found within 150 ms"
        )
        print("| wave | boundary | Dice base | Dice other | base mean ± sd ms | other mean ± sd ms | sd delta ms |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in acc:
            print(
                f"| {r['wave']} | {r['boundary']} | {r['dice_base']:.4f} | {r['dice_other']:.4f} "
                f"| {r['mean_ms_base']:+.2f} ± {r['sd_ms_base']:.2f} | {r['mean_ms_other']:+.2f} ± "
                f"{r['sd_ms_other']:.2f} | {r['sd_delta_ms']:+.2f} |"
            )
        b1 = [r["vs_base"] for r in rows if r["engine"] == "other" and r["batch"] == 1]
        problems = candidate_problems(acc, b1[0] if b1 else None)
        print(f"mean Dice base {reports['base']['mean_dice']:.4f}, other {reports['other']['mean_dice']:.4f}")
        print(
            "shipping rule: " + ("OTHER is a candidate" if not problems else "not a candidate: " + "; ".join(problems))
        )
        result |= {
            "ludb_test": reports,
            "accuracy_rows": acc,
            "candidate": not problems,
            "candidate_problems": problems,
        }
    for engine in engines.values():
        engine.close()
    if args.json:
        write_results(args.json, result, latencies, lambda key: f"{folders[key]}: ONNX Runtime")


def write_results(path: Path, result: dict, latencies: dict[tuple[str, int], list[float]],
                  label: Callable[[str], str]) -> None:
    """The JSON at ``path`` and one latency histogram per (runner, batch) beside it, titled ``label(runner)``."""
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    for (key, batch), values in latencies.items():
        png = path.with_name(f"{path.stem}-{key}-b{batch}.png")
        plot_latency_histogram(values, png, f"{label(key)}, batch {batch}, latency per call (ms)")
        print(f"wrote {png}")


def torch_runner(checkpoint: Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """PyTorch eager inference of a checkpoint (normalise + forward, no grad) on ``threads`` CPU threads."""
    import torch

    from train.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint)
    spec = Normalisation.from_dict(meta["normalisation"])

    def infer(windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(normalise(windows, spec))).numpy()

    return infer, f"torch {torch.__version__}"


def random_checkpoint(task: str, path: Path) -> Path:
    """A checkpoint of the untrained default architecture (``train.config.ModelConfig``): timing needs no training."""
    import dataclasses

    import torch

    from edge.ecg import INTERNAL_FS_HZ
    from train.checkpoint import save_checkpoint
    from train.config import ModelConfig
    from train.data.normalise import NORMALISATION
    from train.models import build_model

    torch.manual_seed(0)
    model_cfg = dataclasses.asdict(ModelConfig())
    classes = PTBXL_SUPERCLASSES if task == "classify" else WAVE_CLASSES
    meta = {
        "task": task,
        "model": model_cfg,
        "leads": list(LEADS_12),
        "fs_hz": INTERNAL_FS_HZ,
        "window_samples": 10 * INTERNAL_FS_HZ,
        "class_names": list(classes),
        "normalisation": NORMALISATION.to_dict(),
        "thresholds": [0.5] * len(classes) if task == "classify" else [],
        "metrics": {"note": "untrained weights (benchmark only)"},
    }
    save_checkpoint(path, build_model(task, model_cfg, len(LEADS_12), len(classes)).eval(), meta)
    return path


def bench_windows(manifest: Manifest, n: int, data_dir: Path) -> np.ndarray:
    """``n`` real LUDB windows in the engine's layout (tiled when LUDB has fewer)."""
    from train.export import reference_windows

    w = reference_windows(
        manifest.leads, manifest.task == "segment", manifest.fs_hz, manifest.window_samples, n, data_dir
    )
    return np.resize(w, (n, *w.shape[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint: built into a temporary engine, and run in PyTorch")
    source.add_argument("--random", choices=("classify", "segment"), help="untrained default model of this task")
    source.add_argument(
        "--compare", nargs=2, type=Path, metavar=("BASE", "OTHER"),
        help="two engine folders (e.g. fp32 and int8): interleaved ONNX Runtime timing, LUDB test accuracy",
    )  # fmt: skip
    parser.add_argument("--engine", type=Path, help="engine folder to time (default: build one from the checkpoint)")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per runner and batch size")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and PyTorch")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with ludb/ (default ../shared/data)")
    parser.add_argument("--rounds", type=int, default=3, help="--compare: alternating turns per engine and batch")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.engine and not args.checkpoint:
        parser.error("--engine needs the --checkpoint it was built from (for the PyTorch baseline)")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    from train.engine_build import build_engine
    from train.export import DEFAULT_DATA_DIR

    data_dir = args.data_dir or DEFAULT_DATA_DIR
    batches = [int(b) for b in args.batches.split(",")]
    if args.compare:
        for folder in args.compare:
            if not (folder / "manifest.json").is_file():
                parser.error(f"--compare: {folder} is not an engine folder (no manifest.json)")
        compare(args, batches, data_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_checkpoint(args.random, Path(tmp) / "random.pt")
        folder = args.engine
        if folder is None:
            folder = Path(tmp) / "engine"
            build_engine(checkpoint, folder, max_batch=max(batches), data_dir=data_dir)
        manifest = Manifest.load(folder)
        runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        versions: dict[str, str] = {"onnxruntime": ort.__version__}
        runners["torch-eager"], versions["torch"] = torch_runner(checkpoint, args.threads)
        engines = [load_engine(folder, "onnxruntime", threads=args.threads)]
        trt_reason = tensorrt_unavailable_reason() if manifest.has_plan else f"{folder} has no model.plan"
        if trt_reason is None:
            engines.append(load_engine(folder, "tensorrt"))
        for engine in engines:
            runners[engine.backend.name] = engine.infer
        windows = bench_windows(manifest, max(batches), data_dir)
        rows = []
        latencies: dict[tuple[str, int], list[float]] = {}
        for batch in batches:
            base = None
            for name, infer in runners.items():
                r = time_runner(infer, windows[:batch], args.seconds)
                latencies[(name, batch)] = r.pop("latencies_ms")
                base = base or r["windows_per_s"]
                rows.append({"runner": name, "batch": batch, **r, "vs_torch": r["windows_per_s"] / base})
        for engine in engines:
            engine.close()
    print(
        f"{manifest.task} engine {manifest.name!r}, input (B, {manifest.channels}, {manifest.window_samples}), "
        f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}; TensorRT: {trt_reason or 'used'}"
    )
    print("| runner | batch | windows/s | p50 ms | p99 ms | vs torch |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['runner']} | {r['batch']} | {r['windows_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['vs_torch']:.2f} |"
        )
    result = {
        "engine": manifest.name,
        "task": manifest.task,
        "input": [None, manifest.channels, manifest.window_samples],
        "threads": args.threads,
        "seconds": args.seconds,
        "machine": f"{platform.machine()} {platform.processor() or ''} ({len(os.sched_getaffinity(0))} CPUs)",
        "load_average_1min": os.getloadavg()[0],
        "versions": versions,
        "tensorrt": trt_reason or "used",
        "rows": rows,
    }
    if args.json:
        write_results(args.json, result, latencies, lambda name: f"{manifest.name}: {name}")


if __name__ == "__main__":
    main()
