"""``train build-engine``: a checkpoint -> an engine folder (``model.onnx``, ``model.plan``, ``manifest.json``).

The ONNX export is checked against PyTorch on real LUDB windows (max abs difference reported, the build fails above
:data:`train.export.FP32_TOLERANCE`). The TensorRT plan is built with the TensorRT Python API and an optimisation
profile for batch ``1..max_batch`` when tensorrt, cuda-python and a GPU are present; otherwise the build says why and
ships the ONNX engine alone (or fails with ``require_tensorrt``). See ``docs/engines.md``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from edge.ecg import INTERNAL_FS_HZ
from edge.inference.manifest import ONNX_FILE, PLAN_FILE, PRECISIONS, Manifest, Normalisation, file_entry, normalise
from edge.inference.onnx_backend import OnnxRuntimeBackend
from edge.inference.tensorrt_backend import (
    TensorRTBackend,
    cuda_check,
    cudart,
    gpu_name,
    tensorrt_unavailable_reason,
)
from train.checkpoint import load_checkpoint
from train.export import (
    DEFAULT_DATA_DIR,
    FP32_TOLERANCE,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    ExportCheckError,
    export_onnx,
    max_abs_diff,
    reference_windows,
)

#: Largest max |TensorRT fp32 - PyTorch| accepted (logit units); TensorRT reorders sums, TF32 is turned off.
PLAN_FP32_TOLERANCE = 1e-3
#: Batch size TensorRT tunes its kernels for (within the profile 1..max_batch).
PLAN_OPT_BATCH = 64
#: TensorRT builder workspace (bytes).
WORKSPACE_BYTES = 1 << 30
#: Real windows used for the export check (and for int8 calibration).
CHECK_WINDOWS = 32
CALIBRATION_WINDOWS = 256


class BuildError(RuntimeError):
    """The engine could not be built as asked (the message says why)."""


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` wrote and measured.

    Attributes:
        manifest: the manifest written to ``out/manifest.json``.
        onnx_max_abs_diff: max |ONNX Runtime - PyTorch| over the check windows (logits).
        plan_max_abs_diff: max |TensorRT - PyTorch| over the same windows, when a plan was built.
        plan_skipped: why no plan was built (one line), or None.
    """

    manifest: Manifest
    onnx_max_abs_diff: float
    plan_max_abs_diff: float | None
    plan_skipped: str | None


def build_engine(
    checkpoint: Path,
    out: Path,
    precision: str = "fp32",
    max_batch: int = 256,
    require_tensorrt: bool = False,
    hop_samples: int | None = None,
    name: str | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    window_samples: int | None = None,
) -> BuildResult:
    """Build an engine folder from a training checkpoint (see :func:`build_engine_from_model`)."""
    model, meta = load_checkpoint(checkpoint)
    return build_engine_from_model(
        model,
        meta,
        out,
        precision,
        max_batch,
        require_tensorrt,
        hop_samples,
        name,
        data_dir,
        str(checkpoint),
        window_samples,
    )


def build_engine_from_model(
    model: torch.nn.Module,
    meta: dict[str, Any],
    out: Path,
    precision: str = "fp32",
    max_batch: int = 256,
    require_tensorrt: bool = False,
    hop_samples: int | None = None,
    name: str | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    source: str = "",
    window_samples: int | None = None,
) -> BuildResult:
    """Export, check and package a model as an engine folder.

    Args:
        model: the trained model in eval mode (plain tensor in, logits out).
        meta: the checkpoint's metadata: ``task``, ``leads``, ``fs_hz``, ``window_samples``, ``class_names``,
            ``normalisation``, ``thresholds`` (classify), ``metrics``; optionally ``hop_samples``, ``multilabel``.
        out: engine folder to write (created; files of an earlier build are replaced).
        precision: TensorRT precision of ``model.plan`` (``model.onnx`` is always fp32).
        max_batch: top of the TensorRT optimisation profile; the edge splits bigger batches.
        require_tensorrt: fail instead of shipping an ONNX-only engine when no plan can be built.
        hop_samples: step between windows at run time (samples); default the checkpoint's, else half a window.
        name: engine name; default the folder name.
        data_dir: folder with the real LUDB records used for the check.
        source: where the model came from (checkpoint path), recorded in ``created_by``.
        window_samples: input length of the engine (segment engines only: the model is fully convolutional, so it
            may run on shorter windows than it was trained on — the edge cuts one window per beat); default the
            checkpoint's training window.

    Raises:
        BuildError: bad arguments or metadata, or TensorRT required but unavailable / failing.
        ExportCheckError: ONNX Runtime (or an fp32 plan) disagrees with PyTorch beyond tolerance.
    """
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not one of {PRECISIONS}")
    if max_batch < 1:
        raise BuildError(f"max_batch must be >= 1, got {max_batch}")
    task, leads = meta["task"], tuple(meta["leads"])
    fs_hz, window = float(meta["fs_hz"]), int(window_samples or meta["window_samples"])
    if window_samples and task != "segment":
        raise BuildError("--window-samples applies to segment engines only (a classifier's window is fixed)")
    if fs_hz != INTERNAL_FS_HZ:
        raise BuildError(f"the checkpoint runs at {fs_hz} Hz; the edge feeds engines at {INTERNAL_FS_HZ} Hz")
    class_names = tuple(meta["class_names"])
    spec = Normalisation.from_dict(meta.get("normalisation", {"kind": "none"}))
    channels = len(leads) if task == "classify" else 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, plan_path = out / ONNX_FILE, out / PLAN_FILE
    plan_path.unlink(missing_ok=True)

    export_onnx(model, onnx_path, channels, window)
    windows = reference_windows(leads, task == "segment", fs_hz, window, CHECK_WINDOWS, data_dir)
    onnx_diff = max_abs_diff(model, OnnxRuntimeBackend(onnx_path, INPUT_NAME, OUTPUT_NAME).run, windows, spec)
    if onnx_diff > FP32_TOLERANCE:
        raise ExportCheckError(
            f"ONNX Runtime differs from PyTorch by {onnx_diff:.2e} > {FP32_TOLERANCE:.0e} on {len(windows)} real "
            f"windows; {onnx_path} is not trustworthy"
        )

    files = {ONNX_FILE: file_entry(onnx_path)}
    plan_diff: float | None = None
    trt_info: dict[str, str] = {}
    skipped = tensorrt_unavailable_reason()
    if skipped is not None and require_tensorrt:
        raise BuildError(f"--require-tensorrt: no TensorRT plan can be built here: {skipped}")
    if skipped is None:
        calibration = None
        if precision == "int8":
            calibration = normalise(
                reference_windows(leads, task == "segment", fs_hz, window, CALIBRATION_WINDOWS, data_dir), spec
            )
        trt_info = build_plan(onnx_path, plan_path, precision, max_batch, calibration)
        files[PLAN_FILE] = file_entry(plan_path)
        runner = TensorRTBackend(plan_path, INPUT_NAME, OUTPUT_NAME, max_batch, trt_info)
        try:
            plan_diff = max_abs_diff(model, runner.run, windows, spec)
        finally:
            runner.close()
        if precision == "fp32" and plan_diff > PLAN_FP32_TOLERANCE:
            raise ExportCheckError(
                f"the fp32 TensorRT plan differs from PyTorch by {plan_diff:.2e} > {PLAN_FP32_TOLERANCE:.0e}"
            )

    metrics = _json_safe(json.loads(json.dumps(meta.get("metrics", {}), default=_json_scalar)))
    if "thresholds_from" in meta:
        metrics["thresholds_from"] = meta["thresholds_from"]
    metrics["export_check"] = {
        "windows": len(windows),
        "source": "LUDB, first window of each record",
        "onnx_max_abs_diff": onnx_diff,
        "plan_max_abs_diff": plan_diff,
    }
    manifest = Manifest(
        name=name or out.name,
        task=task,
        leads=leads,
        fs_hz=fs_hz,
        window_samples=window,
        hop_samples=int(hop_samples or meta.get("hop_samples") or window // 2),
        normalisation=spec,
        input_name=INPUT_NAME,
        input_shape=(None, channels, window),
        output_names=(OUTPUT_NAME,),
        activation=_activation(meta),
        class_names=class_names,
        thresholds=_thresholds(meta, class_names),
        metrics=metrics,
        files=files,
        opset=OPSET,
        precision=precision if PLAN_FILE in files else "fp32",
        max_batch=max_batch,
        created_by=f"beatssl-edge {_version()} train build-engine {source}".strip(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        tensorrt=trt_info,
    )
    manifest.write(out)
    return BuildResult(manifest, onnx_diff, plan_diff, skipped)


def _activation(meta: dict[str, Any]) -> str:
    """Segment: softmax over the wave classes; classify: sigmoid (multilabel, the default) or softmax."""
    if meta["task"] == "segment" or not meta.get("multilabel", True):
        return "softmax"
    return "sigmoid"


def _thresholds(meta: dict[str, Any], class_names: tuple[str, ...]) -> dict[str, float]:
    """Per-class thresholds from the checkpoint (a list in class order or a dict); none for segment."""
    if meta["task"] == "segment":
        return {}
    raw = meta.get("thresholds")
    if raw is None:
        raise BuildError("the classify checkpoint has no decision thresholds (meta['thresholds'])")
    if isinstance(raw, dict):
        return {c: float(raw[c]) for c in class_names}
    values = [float(v) for v in np.asarray(raw, dtype=float).ravel()]
    if len(values) != len(class_names):
        raise BuildError(f"{len(values)} thresholds for {len(class_names)} classes")
    return dict(zip(class_names, values, strict=True))


def _json_scalar(value: Any) -> Any:
    """numpy / torch scalars in checkpoint metrics -> plain Python numbers (anything else is an error)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    raise TypeError(f"checkpoint metrics hold a {type(value).__name__}, which JSON cannot store")


def _json_safe(value: Any) -> Any:
    """Undefined metrics (NaN, e.g. an AUROC without positives) -> null, so that manifest.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _version() -> str:
    try:
        return importlib.metadata.version("beatssl-edge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_plan(
    onnx_path: Path, plan_path: Path, precision: str, max_batch: int, calibration: np.ndarray | None = None
) -> dict[str, str]:
    """Build a TensorRT plan from ``model.onnx`` with an optimisation profile for batch ``1..max_batch``.

    Args:
        onnx_path: the exported model (one input ``(batch, C, T)``).
        plan_path: where to write the serialised engine.
        precision: ``fp32`` (TF32 off), ``fp16``, or ``int8`` (with fp16 fallback, entropy-calibrated on
            ``calibration``).
        max_batch: top of the profile (the profile's opt batch is ``min(PLAN_OPT_BATCH, max_batch)``).
        calibration: normalised float32 ``(N, C, T)`` windows for int8 calibration.

    Returns:
        ``{"version": TensorRT version, "device": GPU name}`` for the manifest.

    Raises:
        BuildError: the ONNX parser or the builder failed.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = (
        0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    shape = tuple(network.get_input(0).shape)[1:]
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, *shape), (min(PLAN_OPT_BATCH, max_batch), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    calibrator = None
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise BuildError("int8 needs calibration windows")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _entropy_calibrator(trt, calibration, min(32, len(calibration)))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise BuildError(f"TensorRT failed to build a {precision} plan from {onnx_path} (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return {"version": trt.__version__, "device": gpu_name()}


def _entropy_calibrator(trt: Any, data: np.ndarray, batch: int) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``data`` in batches of ``batch`` through one device buffer."""
    rt = cudart()

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.next = 0
            self.device = int(cuda_check(rt.cudaMalloc(data[:batch].nbytes)))

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.next + batch > len(data):
                return None
            chunk = np.ascontiguousarray(data[self.next : self.next + batch], dtype=np.float32)
            self.next += batch
            kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            cuda_check(rt.cudaMemcpy(self.device, chunk.ctypes.data, chunk.nbytes, kind))
            return [self.device]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

        def free(self) -> None:
            cuda_check(rt.cudaFree(self.device))

    return Calibrator()


# ---------------------------------------------------------------------------------------------- command
def build_engine_command(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Training checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", help="Engine folder to write, e.g. engines/wave-seg (created).")],
    precision: Annotated[
        str, typer.Option("--precision", help="TensorRT plan precision: fp32, fp16 or int8 (model.onnx is fp32).")
    ] = "fp32",
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Top of the TensorRT profile (batch 1..B); bigger is split.")
    ] = 256,
    require_tensorrt: Annotated[
        bool,
        typer.Option(
            "--require-tensorrt", help="Fail (exit 1) instead of shipping an ONNX-only engine without a plan."
        ),
    ] = False,
    hop_samples: Annotated[
        int | None,
        typer.Option("--hop-samples", min=1, help="Step between windows at run time (samples; default half a window)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Engine name (default: the folder name).")] = None,
    window_samples: Annotated[
        int | None,
        typer.Option(
            "--window-samples",
            min=1,
            help="Segment engines: input window in samples at the engine rate "
            "(a multiple of the encoder downsampling; the edge cuts one per beat). Default: training window.",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder with ludb/ (real records for the PyTorch-vs-ONNX check).")
    ] = DEFAULT_DATA_DIR,
) -> None:
    """Build an engine folder from a checkpoint: model.onnx (checked against PyTorch on real ECG windows), model.plan
    (TensorRT, when tensorrt and a GPU are present) and manifest.json. Load it with `beatssl-edge ... --engine DIR`."""
    try:
        result = build_engine(
            checkpoint, out, precision, max_batch, require_tensorrt, hop_samples, name, data_dir, window_samples
        )
    except (BuildError, ExportCheckError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    m = result.manifest
    typer.echo(
        f"{out}: {m.task} engine {m.name!r}, leads {','.join(m.leads)}, {m.window_samples} samples at {m.fs_hz:g} Hz"
    )
    typer.echo(f"  model.onnx  opset {m.opset}, max |ORT - PyTorch| = {result.onnx_max_abs_diff:.2e} on real windows")
    if result.plan_skipped is None:
        typer.echo(
            f"  model.plan  {m.precision}, batch 1..{m.max_batch}, max |TRT - PyTorch| = {result.plan_max_abs_diff:.2e}"
        )
    else:
        typer.echo(f"warning: no model.plan: {result.plan_skipped}; the engine runs on ONNX Runtime", err=True)
