"""Engine throughput and latency per backend and batch size, against the same model in PyTorch eager.

For each runner (PyTorch eager, ONNX Runtime, TensorRT where available) and each batch size, calls ``infer`` on real
LUDB windows (mV) for ``--seconds`` and reports windows/s and the per-call latency p50 / p99 (ms). Every runner gets
the same raw windows and does the same work per call: normalise (numpy) + forward. The ratio column is the
runner's windows/s over PyTorch eager's at the same batch size, measured in the same run.

Examples::

    .venv/bin/python bench/engines.py --checkpoint runs/cpu-small/segment/model.pt --json bench/engines-seg.json
    .venv/bin/python bench/engines.py --random classify --threads 2      # untrained default architecture
    .venv/bin/python bench/engines.py --checkpoint runs/.../model.pt --engine engines/rhythm-cls  # a built engine
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
    parser.add_argument("--engine", type=Path, help="engine folder to time (default: build one from the checkpoint)")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per runner and batch size")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and PyTorch")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with ludb/ (default ../shared/data)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.engine and args.random:
        parser.error("--engine needs the --checkpoint it was built from (for the PyTorch baseline)")

    from train.engine_build import build_engine
    from train.export import DEFAULT_DATA_DIR

    data_dir = args.data_dir or DEFAULT_DATA_DIR
    batches = [int(b) for b in args.batches.split(",")]
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
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
        for (name, batch), values in latencies.items():
            png = args.json.with_name(f"{args.json.stem}-{name}-b{batch}.png")
            plot_latency_histogram(values, png, f"{manifest.name}: {name}, batch {batch}, latency per call (ms)")
            print(f"wrote {png}")


if __name__ == "__main__":
    main()
