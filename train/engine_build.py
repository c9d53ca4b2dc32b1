"""``train build-engine``: a checkpoint -> an engine folder (``model.onnx``, ``model.plan``, ``manifest.json``).

The engine is built in a temporary folder beside ``--out`` and moved into place only once it has passed its checks,
so a failed build (in place or not) leaves the old folder as it was. The ONNX export is checked against PyTorch on
real windows (max abs difference reported, the build fails above :data:`train.export.FP32_TOLERANCE`). The TensorRT
plan is built with the TensorRT Python API and an optimisation profile for batch ``1..max_batch`` when tensorrt,
cuda-python and a GPU are present, and checked too (fp32 against PyTorch, fp16 / int8 against ONNX Runtime:
:func:`plan_problem`); otherwise the build says why and ships the ONNX engine alone (or fails with
``require_tensorrt``). With ``onnx_int8`` the checked fp32 export (from which any plan is built) is then quantised
to int8 for ONNX Runtime on CPU and checked against fp32 (:func:`quantize_onnx_file`, :mod:`train.quantize`);
:func:`quantize_engine` does the same to an existing fp32 engine folder, and can first re-window a segment engine to
another input length (:func:`rewindow_segment_onnx`, :func:`window_check`). See ``docs/engines.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnx
import torch
import typer

from edge.ecg import INTERNAL_FS_HZ
from edge.inference.engine import run_in_batches, to_probabilities
from edge.inference.manifest import (
    DEFAULT_FEATURE_INPUT,
    MANIFEST_FILE,
    ONNX_FILE,
    PLAN_FILE,
    PRECISIONS,
    Manifest,
    ManifestError,
    Normalisation,
    file_entry,
    normalise,
)
from edge.inference.onnx_backend import OnnxRuntimeBackend
from edge.inference.tensorrt_backend import (
    TensorRTBackend,
    cuda_check,
    cudart,
    gpu_name,
    tensorrt_unavailable_reason,
    trt_logger,
)
from offline.records import RecordError
from train.checkpoint import load_checkpoint
from train.export import (
    DEFAULT_DATA_DIR,
    FP32_TOLERANCE,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    ExportCheckError,
    export_onnx,
    reference_beats,
    reference_features,
    reference_windows,
    torch_logits,
)
from train.quantize import (
    INT8_CALIBRATION_WINDOWS,
    INT8_CHECK_WINDOWS,
    int8_problem,
    ludb_part_windows,
    quantize_onnx_int8,
)

#: Largest max |TensorRT fp32 - PyTorch| accepted (logit units); TensorRT reorders sums, TF32 is turned off.
PLAN_FP32_TOLERANCE = 1e-3
#: fp16 / int8 plans against ONNX Runtime (fp32) on the check windows, segment engines: the smallest fraction of
#: samples whose most probable wave class (argmax over the classes) is the same.
PLAN_MIN_ARGMAX_AGREEMENT = {"fp16": 0.99, "int8": 0.98}
#: fp16 / int8 plans against ONNX Runtime (fp32), classify and beat-classify engines: the largest absolute difference
#: of any class probability (after the manifest's activation), so that decisions at any threshold move by no more.
PLAN_MAX_PROB_DIFF = {"fp16": 0.02, "int8": 0.05}
#: Batch size TensorRT tunes its kernels for (within the profile 1..max_batch); int8 calibrates at this batch too.
PLAN_OPT_BATCH = 64
#: TensorRT builder workspace (bytes).
WORKSPACE_BYTES = 1 << 30
#: Real windows used for the export check (and for int8 calibration).
CHECK_WINDOWS = 32
CALIBRATION_WINDOWS = 256
#: Re-windowed segment engines (:func:`receptive_field_need`): share of the output's sensitivity to the input that
#: the receptive-field need holds, the perturbation (normalised units), the neighbouring phases and the LUDB val
#: leads it is measured at.
RECEPTIVE_FIELD_MASS = 0.9
RECEPTIVE_FIELD_STEP = 0.05
RECEPTIVE_FIELD_PHASES = 20
RECEPTIVE_FIELD_LEADS = 12
#: Re-windowed segment engines (:func:`window_check`): smallest fraction of the short window's central samples whose
#: wave class is the source engine's on the same samples of LUDB val windows.
WINDOW_MIN_CENTRE_AGREEMENT = 0.95


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
        plan_agreement: for a plan, :func:`plan_agreement` against ONNX Runtime; empty without one.
    """

    manifest: Manifest
    onnx_max_abs_diff: float
    plan_max_abs_diff: float | None
    plan_skipped: str | None
    plan_agreement: dict[str, float]


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
    onnx_int8: bool = False,
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
        onnx_int8,
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
    onnx_int8: bool = False,
) -> BuildResult:
    """Export, check and package a model as an engine folder.

    Args:
        model: the trained model in eval mode: ``forward(x)``, or ``forward(x, features)`` when ``meta`` has
            ``feature_names``; logits out.
        meta: the checkpoint's metadata: ``task``, ``leads``, ``fs_hz``, ``window_samples``, ``class_names``,
            ``normalisation``, ``thresholds`` (classify; optional for beat-classify), ``metrics``; ``r_offset_samples``
            (beat-classify); optionally ``hop_samples``, ``multilabel``, ``feature_names``, ``feature_input_name``.
        out: engine folder to write. Built beside it and moved into place after the checks; an existing engine
            folder is replaced only then (a failed build leaves it intact). A folder that is not an engine folder
            and not empty is refused.
        precision: TensorRT precision of ``model.plan`` (built from the fp32 export, whatever ``onnx_int8``).
        max_batch: top of the TensorRT optimisation profile; the edge splits bigger batches.
        require_tensorrt: fail instead of shipping an ONNX-only engine when no plan can be built.
        hop_samples: step between windows at run time (samples); default the checkpoint's, else half a window.
        name: engine name; default the folder name.
        data_dir: folder with the real records used for the check (LUDB; MIT-BIH for beat-classify).
        source: where the model came from (checkpoint path), recorded in ``created_by``.
        window_samples: input length of the engine (segment engines only: the model is fully convolutional, so it
            may run on shorter windows than it was trained on — the edge cuts one window per beat); default the
            checkpoint's training window.
        onnx_int8: ship ``model.onnx`` quantised to int8 (manifest ``onnx_precision: "int8"``), calibrated on LUDB
            train windows and checked against the fp32 export on LUDB val windows (:func:`quantize_onnx_file`);
            segment and classify engines only.

    Raises:
        BuildError: bad arguments or metadata, or TensorRT required but unavailable / failing.
        ExportCheckError: ONNX Runtime or the plan disagrees with PyTorch / ONNX Runtime beyond tolerance, or the
            int8 graph with the fp32 one.
    """
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not one of {PRECISIONS}")
    if max_batch < 1:
        raise BuildError(f"max_batch must be >= 1, got {max_batch}")
    task = meta["task"]
    if window_samples and task != "segment":
        raise BuildError("--window-samples applies to segment engines only (a classifier's window is fixed)")
    if float(meta["fs_hz"]) != INTERNAL_FS_HZ:
        raise BuildError(f"the checkpoint runs at {meta['fs_hz']} Hz; the edge feeds engines at {INTERNAL_FS_HZ} Hz")
    if onnx_int8:
        _check_int8_task(task, tuple(meta.get("feature_names", ())))
    out, work = _work_folder(out)
    try:
        result = _build_into(
            work, model, meta, name or out.name, precision, max_batch, require_tensorrt, hop_samples, data_dir,
            source, window_samples, onnx_int8,
        )
        Manifest.load(work)  # what the edge will read: schema and every file's sha256
        _replace_folder(work, out)
    except ManifestError as e:
        raise BuildError(f"the built engine does not validate: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _build_into(
    work: Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    name: str,
    precision: str,
    max_batch: int,
    require_tensorrt: bool,
    hop_samples: int | None,
    data_dir: Path,
    source: str,
    window_samples: int | None,
    onnx_int8: bool,
) -> BuildResult:
    """Write and check ``model.onnx``, ``model.plan`` (when possible) and ``manifest.json`` in the folder ``work``."""
    task, leads = meta["task"], tuple(meta["leads"])
    fs_hz, window = float(meta["fs_hz"]), int(window_samples or meta["window_samples"])
    class_names = tuple(meta["class_names"])
    spec = Normalisation.from_dict(meta.get("normalisation", {"kind": "none"}))
    feature_names = tuple(meta.get("feature_names", ()))
    feature_input = str(meta.get("feature_input_name", DEFAULT_FEATURE_INPUT))
    r_offset = meta.get("r_offset_samples")
    if task == "beat-classify" and r_offset is None:
        raise BuildError("the beat-classify checkpoint has no r_offset_samples (samples of the window before R)")
    channels = 1 if task == "segment" else len(leads)
    onnx_path, plan_path = work / ONNX_FILE, work / PLAN_FILE

    def check_inputs(n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """``n`` real windows (normalised), their features (two-input models) and where the windows come from."""
        if task == "beat-classify":
            raw = reference_beats(leads, fs_hz, window, int(r_offset), n, data_dir)
            where = f"MIT-BIH annotated beats, {int(r_offset)} samples before R"
        else:
            raw = reference_windows(leads, task == "segment", fs_hz, window, n, data_dir)
            where = "LUDB, first window of each record"
        feats = reference_features(len(raw), len(feature_names)) if feature_names else None
        return normalise(raw, spec), feats, where

    try:
        export_onnx(model, onnx_path, channels, window, len(feature_names), feature_input)
    except (TypeError, RuntimeError) as e:  # e.g. forward(x, features) vs feature_names, an op ONNX lacks
        inputs = f"(x, features[{len(feature_names)}])" if feature_names else "(x)"
        first = str(e).splitlines()[0] if str(e).strip() else repr(e)
        raise BuildError(f"the ONNX export of forward{inputs} failed: {first}") from e
    x, features, where = check_inputs(CHECK_WINDOWS)
    want = torch_logits(model, x, features)
    second = feature_input if feature_names else None
    ort = OnnxRuntimeBackend(onnx_path, INPUT_NAME, OUTPUT_NAME, feature_input_name=second)
    onnx_out = run_in_batches(ort.run, x, features, max_batch)
    onnx_diff = float(np.max(np.abs(onnx_out - want)))
    if onnx_diff > FP32_TOLERANCE:
        raise ExportCheckError(
            f"ONNX Runtime differs from PyTorch by {onnx_diff:.2e} > {FP32_TOLERANCE:.0e} on {len(x)} real "
            f"windows; {ONNX_FILE} is not trustworthy"
        )
    activation = _activation(meta)

    files = {ONNX_FILE: file_entry(onnx_path)}
    plan_diff: float | None = None
    agreement: dict[str, float] = {}
    trt_info: dict[str, str] = {}
    skipped = tensorrt_unavailable_reason()
    if skipped is not None and require_tensorrt:
        raise BuildError(f"--require-tensorrt: no TensorRT plan can be built here: {skipped}")
    if skipped is None:
        calibration = None
        if precision == "int8":
            cal_x, cal_f, _ = check_inputs(CALIBRATION_WINDOWS)
            calibration = {INPUT_NAME: cal_x, **({feature_input: cal_f} if cal_f is not None else {})}
        trt_info = build_plan(onnx_path, plan_path, precision, max_batch, calibration)
        files[PLAN_FILE] = file_entry(plan_path)
        runner = TensorRTBackend(plan_path, INPUT_NAME, OUTPUT_NAME, max_batch, trt_info, second)
        try:
            plan_out = run_in_batches(runner.run, x, features, max_batch)
        finally:
            runner.close()
        plan_diff = float(np.max(np.abs(plan_out - want)))
        agreement = plan_agreement(plan_out, onnx_out, activation)
        problem = plan_problem(task, precision, plan_diff, agreement)
        if problem:
            raise ExportCheckError(f"the {precision} TensorRT plan fails its check on {len(x)} real windows: {problem}")
    int8_check: dict[str, Any] = {}
    if onnx_int8:  # after the plan, which TensorRT builds and calibrates from the fp32 export
        int8_check = quantize_onnx_file(onnx_path, task, leads, fs_hz, window, spec, activation, data_dir)
        files[ONNX_FILE] = file_entry(onnx_path)

    metrics = _json_safe(json.loads(json.dumps(meta.get("metrics", {}), default=_json_scalar)))
    if "thresholds_from" in meta:
        metrics["thresholds_from"] = meta["thresholds_from"]
    metrics["export_check"] = {
        "windows": len(x),
        "source": where,
        "onnx_max_abs_diff": onnx_diff,
        "plan_max_abs_diff": plan_diff,
        **{f"plan_{k}": v for k, v in agreement.items()},
    }
    if int8_check:
        metrics["int8_check"] = int8_check
    manifest = Manifest(
        name=name,
        task=task,
        leads=leads,
        fs_hz=fs_hz,
        window_samples=window,
        hop_samples=int(hop_samples or meta.get("hop_samples") or window // 2),
        normalisation=spec,
        input_name=INPUT_NAME,
        input_shape=(None, channels, window),
        output_names=(OUTPUT_NAME,),
        activation=activation,
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
        onnx_precision="int8" if onnx_int8 else "fp32",
        feature_names=feature_names,
        feature_input_name=feature_input,
        r_offset_samples=None if r_offset is None else int(r_offset),
    )
    manifest.write(work)
    return BuildResult(manifest, onnx_diff, plan_diff, skipped, agreement)


def _check_int8_task(task: str, feature_names: tuple[str, ...]) -> None:
    """Refuse ``--onnx-int8`` for engines its LUDB calibration does not fit (beat-classify, two-input models)."""
    if task not in ("segment", "classify") or feature_names:
        raise BuildError(
            f"--onnx-int8 supports one-input segment and classify engines (calibrated on LUDB windows), not this "
            f"{task} engine{' with features' if feature_names else ''}"
        )


def quantize_onnx_file(
    onnx_path: Path,
    task: str,
    leads: tuple[str, ...],
    fs_hz: float,
    window_samples: int,
    spec: Normalisation,
    activation: str,
    data_dir: Path,
) -> dict[str, Any]:
    """Replace the fp32 ``onnx_path`` by its int8 quantisation once that passes its check against fp32.

    Calibrates on up to :data:`train.quantize.INT8_CALIBRATION_WINDOWS` LUDB train-part windows and compares int8
    with fp32 (ONNX Runtime, both) on up to :data:`train.quantize.INT8_CHECK_WINDOWS` LUDB val-part windows
    (:func:`train.quantize.ludb_part_windows`, normalised with ``spec``), by :func:`train.quantize.int8_problem`.

    Args:
        onnx_path: the checked fp32 ``model.onnx`` (one input :data:`train.export.INPUT_NAME`); replaced in place.
        task: ``segment`` or ``classify``.
        leads: the engine's leads (classify: its channels in order).
        fs_hz: the engine's rate (Hz); window_samples: its input length (samples).
        spec: the engine's normalisation; activation: its ``softmax`` / ``sigmoid``.
        data_dir: folder holding ``ludb/``.

    Returns:
        The manifest's ``metrics.int8_check``: rows used and :func:`plan_agreement` of int8 against fp32.

    Raises:
        ExportCheckError: the int8 graph fails the check (the fp32 file is left as it was).
        BuildError: LUDB lacks a lead the engine reads (or cannot be read).
    """
    per_lead = task == "segment"
    try:
        cal = ludb_part_windows(leads, per_lead, fs_hz, window_samples, "train", INT8_CALIBRATION_WINDOWS, data_dir)
        check = ludb_part_windows(leads, per_lead, fs_hz, window_samples, "val", INT8_CHECK_WINDOWS, data_dir)
    except RecordError as e:  # e.g. a classify engine reading a lead LUDB lacks
        raise BuildError(f"int8 calibration reads LUDB: {e}") from e
    x_cal, x_check = normalise(cal, spec), normalise(check, spec)
    int8_path = onnx_path.with_name(f"{onnx_path.stem}.int8{onnx_path.suffix}")
    quantize_onnx_int8(onnx_path, int8_path, {INPUT_NAME: x_cal})
    fp32_out = OnnxRuntimeBackend(onnx_path, INPUT_NAME, OUTPUT_NAME).run(x_check)
    int8_out = OnnxRuntimeBackend(int8_path, INPUT_NAME, OUTPUT_NAME).run(x_check)
    agreement = plan_agreement(int8_out, fp32_out, activation)
    problem = int8_problem(task, agreement)
    if problem:
        int8_path.unlink()
        raise ExportCheckError(f"the int8 {ONNX_FILE} fails its check on {len(x_check)} LUDB val windows: {problem}")
    os.replace(int8_path, onnx_path)
    return {
        "calibration_windows": len(x_cal),
        "calibration_source": "LUDB train part, first window of each record",
        "windows": len(x_check),
        "source": "LUDB val part, first window of each record",
        **agreement,
    }


def quantize_engine(
    src: Path,
    out: Path,
    name: str | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    window_samples: int | None = None,
    min_centre_agreement: float = WINDOW_MIN_CENTRE_AGREEMENT,
) -> Manifest:
    """Quantise an existing fp32 engine folder's ``model.onnx`` to int8 into ``out`` (no checkpoint needed).

    The same calibration, check and packaging as ``build-engine --onnx-int8`` (:func:`quantize_onnx_file`), from
    the folder's validated fp32 ``model.onnx``. A ``model.plan`` (built from that fp32 export) is copied unchanged.
    ``out`` may be ``src`` (replaced only once the int8 graph has passed); the manifest keeps every field but
    ``name`` (default: ``out``'s folder name), ``files``, ``onnx_precision``, ``metrics.int8_check``, ``created_by``
    and ``created_at``.

    With ``window_samples`` other than the source's (segment engines), the fp32 graph is first re-windowed
    (:func:`rewindow_segment_onnx`, checked by :func:`window_check` against the source on the centre of LUDB val
    windows, the result in ``metrics.window_check``) and then quantised and calibrated on windows of the new
    length; the manifest gets the new ``window_samples``, ``input_shape`` and ``hop_samples`` (half the window),
    and a ``model.plan`` (fixed to the old length) is left out. ``min_centre_agreement`` is the floor of that check
    (``--min-centre-agreement``; lowered only to measure lengths the check refuses).

    Raises:
        BuildError: ``src`` is already int8, or is an engine :func:`_check_int8_task` refuses, or ``out`` exists and
            is not an engine folder, or ``window_samples`` is refused (:func:`window_problem`).
        ManifestError: ``src`` does not validate.
        ExportCheckError: the int8 graph fails its check, or the re-windowed one disagrees with the source.
    """
    source = Manifest.load(src)
    if source.onnx_precision != "fp32":
        raise BuildError(f"{src}: {ONNX_FILE} is already {source.onnx_precision}; quantise from an fp32 engine")
    _check_int8_task(source.task, source.feature_names)
    rewindow = window_samples is not None and window_samples != source.window_samples
    if rewindow and source.task != "segment":
        raise BuildError(f"--window-samples applies to segment engines only, not this {source.task} engine")
    out, work = _work_folder(out)
    try:
        fields: dict[str, Any] = {}
        metrics = dict(source.metrics)
        if rewindow:
            assert window_samples is not None
            rewindow_segment_onnx(source, Path(src) / ONNX_FILE, work / ONNX_FILE, window_samples, data_dir)
            metrics["window_check"] = window_check(
                source, Path(src) / ONNX_FILE, work / ONNX_FILE, data_dir, min_centre_agreement
            )
            fields = {
                "window_samples": window_samples,
                "hop_samples": window_samples // 2,
                "input_shape": (None, 1, window_samples),
                "precision": "fp32",
                "tensorrt": {},
            }
            files = [ONNX_FILE]  # a TensorRT plan is built for one input length: not carried over
        else:
            files = list(source.files)
            for file in files:
                shutil.copy2(Path(src) / file, work / file)
        window = int(fields.get("window_samples", source.window_samples))
        metrics["int8_check"] = quantize_onnx_file(
            work / ONNX_FILE, source.task, source.leads, source.fs_hz, window,
            source.normalisation, source.activation, data_dir,
        )
        manifest = dataclasses.replace(
            source,
            name=name or out.name,
            files={**{f: source.files[f] for f in files}, ONNX_FILE: file_entry(work / ONNX_FILE)},
            onnx_precision="int8",
            metrics=metrics,
            created_by=f"beatssl-edge {_version()} train quantize-engine {src}"
            + (f" --window-samples {window_samples}" if rewindow else ""),
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **fields,
        )
        manifest.write(work)
        Manifest.load(work)
        _replace_folder(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def graph_downsampling(model: onnx.ModelProto) -> int:
    """Total temporal down-sampling of a segment graph (samples): the product of its ``ConvTranspose`` strides, by
    which the decoder brings each level back to the resolution of its skip connection. An input length that is
    not a multiple of it gives skip and up-sampled tensors of different lengths (the ``Concat`` fails)."""
    factor = 1
    for node in model.graph.node:
        if node.op_type == "ConvTranspose":
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1])
            factor *= math.prod(strides)
    return factor


def _with_length(model: onnx.ModelProto, window_samples: int) -> onnx.ModelProto:
    """A copy of a one-input, one-output ``(batch, C, T)`` graph with ``T = window_samples`` on its input and
    output, intermediate shapes dropped (re-inferred by the checker)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in (out.graph.input[0], out.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        dims[len(dims) - 1].Clear()
        dims[len(dims) - 1].dim_value = window_samples
    del out.graph.value_info[:]
    return out


def receptive_field_need(source: Manifest, onnx_path: Path, data_dir: Path = DEFAULT_DATA_DIR) -> int:
    """Half-width (samples) of the input that drives a segment graph's output at a sample: the smallest ``h`` such
    that :data:`RECEPTIVE_FIELD_MASS` of the output's sensitivity lies within ``h`` samples of it.

    Measured on the fp32 graph ``onnx_path`` of the engine ``source`` at its own window: each of
    :data:`RECEPTIVE_FIELD_LEADS` LUDB val leads (normalised as the manifest says) is perturbed by
    :data:`RECEPTIVE_FIELD_STEP` at each of :data:`RECEPTIVE_FIELD_PHASES` neighbouring samples of its centre (the
    strides make the field depend on the phase), and the summed ``|change of the logits|`` at distance ``d`` from
    the perturbed sample, over leads and phases, is the sensitivity profile. On the shipped wave-seg: 104 samples
    (0.42 s; its exact field reaches about 265 samples each side).
    """
    length, phases = source.window_samples, RECEPTIVE_FIELD_PHASES
    session = OnnxRuntimeBackend(onnx_path, INPUT_NAME, OUTPUT_NAME)
    leads = ludb_part_windows(source.leads, True, source.fs_hz, length, "val", RECEPTIVE_FIELD_LEADS, data_dir)
    leads = normalise(leads, source.normalisation)
    centre = (length - phases) // 2
    batch = np.repeat(leads, phases + 1, axis=0).reshape(len(leads), phases + 1, length)
    for k in range(phases):
        batch[:, k + 1, centre + k] += RECEPTIVE_FIELD_STEP
    logits = session.run(batch.reshape(-1, 1, length)).reshape(len(leads), phases + 1, -1, length)
    change = np.abs(logits[:, 1:] - logits[:, :1]).sum(axis=(0, 2))  # (phases, length)
    distance = np.abs(np.arange(length)[None, :] - (centre + np.arange(phases))[:, None])
    profile = np.bincount(distance.ravel(), weights=change.ravel())
    return int(np.searchsorted(np.cumsum(profile) / profile.sum(), RECEPTIVE_FIELD_MASS))


def window_problem(window_samples: int, factor: int, need: int) -> str | None:
    """Why a segment graph cannot take ``window_samples`` (one line), or None: it must be a multiple of the graph's
    down-sampling ``factor`` and at least twice the receptive-field ``need`` (:func:`receptive_field_need`), so
    that the window's centre sample sees its field on both sides."""
    if window_samples % factor:
        return f"--window-samples {window_samples} is not a multiple of the network's down-sampling ({factor} samples)"
    if window_samples < 2 * need:
        return (
            f"--window-samples {window_samples} is shorter than 2 x the network's receptive-field need of {need} "
            f"samples ({2 * need})"
        )
    return None


def rewindow_segment_onnx(
    source: Manifest, src: Path, dst: Path, window_samples: int, data_dir: Path = DEFAULT_DATA_DIR
) -> None:
    """Write a copy ``dst`` of the fully convolutional fp32 graph ``src`` of the segment engine ``source`` that
    takes ``(batch, 1, window_samples)`` windows.

    The same weights; only the input and output lengths change (the graph holds no length but those). The copy
    passes ``onnx.checker`` with full shape inference and loads in ONNX Runtime, where one zero window must give
    ``(1, n_classes, window_samples)`` logits.

    Raises:
        BuildError: the length is refused by :func:`window_problem`, or the copy does not check or load.
    """
    model = onnx.load(str(src))
    problem = window_problem(window_samples, graph_downsampling(model), receptive_field_need(source, src, data_dir))
    if problem:
        raise BuildError(problem)
    resized = _with_length(model, window_samples)
    try:
        onnx.checker.check_model(resized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise BuildError(f"the {window_samples}-sample graph does not check: {str(e).splitlines()[0]}") from e
    onnx.save(resized, str(dst))
    logits = OnnxRuntimeBackend(dst, INPUT_NAME, OUTPUT_NAME).run(np.zeros((1, 1, window_samples), np.float32))
    if logits.shape[0] != 1 or logits.shape[2] != window_samples:
        raise BuildError(f"the {window_samples}-sample graph gives logits of shape {logits.shape}")


def window_check(
    source: Manifest,
    src_onnx: Path,
    new_onnx: Path,
    data_dir: Path = DEFAULT_DATA_DIR,
    min_agreement: float = WINDOW_MIN_CENTRE_AGREEMENT,
) -> dict:
    """Agreement of a re-windowed segment graph with its source on the same samples of real LUDB val leads.

    Each of :data:`train.quantize.INT8_CHECK_WINDOWS` source-length val windows runs through the source; its centre
    ``window_samples`` samples, cut out and normalised on their own (as the edge cuts a window per beat), through
    the new graph. Compared: the wave-class argmax on the central half of the short window, the part the new
    engine answers for (a beat's waves; one hop). Fails below ``min_agreement``.

    Returns:
        The manifest's ``metrics.window_check``: the source window, the windows, the compared samples and the
        argmax agreement.

    Raises:
        ExportCheckError: the agreement is below the floor.
    """
    new_window = onnx.load(str(new_onnx)).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    full = ludb_part_windows(source.leads, True, source.fs_hz, source.window_samples, "val", INT8_CHECK_WINDOWS,
                             data_dir)
    lo = (source.window_samples - new_window) // 2
    want = OnnxRuntimeBackend(src_onnx, INPUT_NAME, OUTPUT_NAME).run(normalise(full, source.normalisation))
    crop = np.ascontiguousarray(full[:, :, lo : lo + new_window])
    got = OnnxRuntimeBackend(new_onnx, INPUT_NAME, OUTPUT_NAME).run(normalise(crop, source.normalisation))
    a, b = new_window // 4, new_window - new_window // 4
    agreement = float(np.mean(got[:, :, a:b].argmax(axis=1) == want[:, :, lo + a : lo + b].argmax(axis=1)))
    if agreement < min_agreement:
        raise ExportCheckError(
            f"the {new_window}-sample graph agrees with the {source.window_samples}-sample source on "
            f"{agreement:.2%} < {min_agreement:.0%} of the central samples of {len(full)} LUDB val "
            "windows"
        )
    return {
        "source_window_samples": source.window_samples,
        "windows": len(full),
        "source": f"LUDB val part, centre {new_window} samples of the first {source.window_samples} of each lead",
        "compared_samples": f"central half of the window ({a}..{b})",
        "argmax_agreement": agreement,
    }


def _work_folder(out: Path) -> tuple[Path, Path]:
    """``out`` resolved, and a new empty folder beside it to build in (moved into place by :func:`_replace_folder`
    once checked). Raises BuildError when ``out`` exists and is neither an engine folder nor empty."""
    out = Path(out).resolve()
    if out.exists() and not (out / MANIFEST_FILE).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise BuildError(f"{out} exists and is not an engine folder (no {MANIFEST_FILE}); choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))


def _replace_folder(new: Path, out: Path) -> None:
    """Move the checked folder ``new`` to ``out`` by renames on one file system.

    Without an ``out``: one rename. Otherwise files of ``out`` that are not engine files are copied into ``new``,
    ``out`` is renamed aside, ``new`` renamed to ``out`` (the aside folder is renamed back if that fails) and the
    aside folder removed.
    """
    if not out.exists():
        os.rename(new, out)
        return
    for entry in out.iterdir():
        if entry.name not in (MANIFEST_FILE, ONNX_FILE, PLAN_FILE):
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, new / entry.name)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, aside / out.name)
    try:
        os.rename(new, out)
    except OSError:
        os.rename(aside / out.name, out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def plan_agreement(plan_logits: np.ndarray, onnx_logits: np.ndarray, activation: str) -> dict[str, float]:
    """How closely a plan's outputs follow ONNX Runtime's on the same inputs.

    Args:
        plan_logits: TensorRT logits, ``(B, n_classes)`` or ``(B, n_classes, T)``.
        onnx_logits: ONNX Runtime (fp32) logits of the same shape.
        activation: the manifest's ``sigmoid`` or ``softmax``.

    Returns:
        ``argmax_agreement``: fraction of windows (classify) or samples (segment) whose most probable class is the
        same; ``max_abs_prob_diff``: largest |probability difference| over every output.
    """
    p_plan, p_onnx = to_probabilities(plan_logits, activation), to_probabilities(onnx_logits, activation)
    return {
        "argmax_agreement": float(np.mean(plan_logits.argmax(axis=1) == onnx_logits.argmax(axis=1))),
        "max_abs_prob_diff": float(np.max(np.abs(p_plan - p_onnx))),
    }


def plan_problem(task: str, precision: str, max_abs_diff: float, agreement: dict[str, float]) -> str | None:
    """Why a plan fails its build-time tolerance (one line), or None.

    fp32: max |plan - PyTorch| <= :data:`PLAN_FP32_TOLERANCE` (logits). fp16 / int8 against ONNX Runtime: segment,
    argmax agreement >= :data:`PLAN_MIN_ARGMAX_AGREEMENT`; classify and beat-classify, max |probability difference|
    <= :data:`PLAN_MAX_PROB_DIFF`.
    """
    if precision == "fp32":
        if max_abs_diff > PLAN_FP32_TOLERANCE:
            return f"max |plan - PyTorch| = {max_abs_diff:.2e} > {PLAN_FP32_TOLERANCE:.0e}"
        return None
    if task == "segment":
        floor = PLAN_MIN_ARGMAX_AGREEMENT[precision]
        if agreement["argmax_agreement"] < floor:
            return f"wave-class argmax agrees with ONNX Runtime on {agreement['argmax_agreement']:.2%} < {floor:.0%}"
        return None
    ceiling = PLAN_MAX_PROB_DIFF[precision]
    if agreement["max_abs_prob_diff"] > ceiling:
        return f"max |probability - ONNX Runtime's| = {agreement['max_abs_prob_diff']:.3f} > {ceiling}"
    return None


def _activation(meta: dict[str, Any]) -> str:
    """Segment, beat-classify: softmax over the classes; classify: sigmoid (multilabel, the default) or softmax."""
    if meta["task"] in ("segment", "beat-classify") or not meta.get("multilabel", True):
        return "softmax"
    return "sigmoid"


def _thresholds(meta: dict[str, Any], class_names: tuple[str, ...]) -> dict[str, float]:
    """Per-class thresholds from the checkpoint (a list in class order or a dict); none for segment, optional for
    beat-classify (argmax without them)."""
    if meta["task"] == "segment":
        return {}
    raw = meta.get("thresholds")
    if raw is None and meta["task"] == "beat-classify":
        return {}
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
    onnx_path: Path,
    plan_path: Path,
    precision: str,
    max_batch: int,
    calibration: dict[str, np.ndarray] | None = None,
) -> dict[str, str]:
    """Build a TensorRT plan from ``model.onnx`` with one optimisation profile for batch ``1..max_batch`` on every
    input (TensorRT 10 API: explicit batch, ``IBuilderConfig`` memory pool and flags, ``IOptimizationProfile``).

    Args:
        onnx_path: the exported model (inputs ``(batch, C, T)`` and optionally ``(batch, K)``).
        plan_path: where to write the serialised engine.
        precision: ``fp32`` (TF32 off), ``fp16``, or ``int8`` (with fp16 fallback, entropy-calibrated on
            ``calibration`` at the profile's opt batch).
        max_batch: top of the profile (the profile's opt batch is ``min(PLAN_OPT_BATCH, max_batch)``).
        calibration: int8 only: normalised float32 rows for every network input, by input name, all of one length.

    Returns:
        ``{"version": TensorRT version, "device": GPU name}`` for the manifest.

    Raises:
        BuildError: the ONNX parser or the builder failed (with TensorRT's error messages), or int8 without data.
    """
    import tensorrt as trt

    logger = trt_logger()
    logger.take_errors()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path}: {' '.join(errors.split())}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_batch = min(PLAN_OPT_BATCH, max_batch)
    profile = builder.create_optimization_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    calibrator = None
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calibration or {t.name for t in inputs} != set(calibration):
            raise BuildError(f"int8 needs calibration rows for the inputs {[t.name for t in inputs]}")
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise BuildError(f"TensorRT {trt.__version__} has no implicit int8 calibration; use --precision fp16")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _entropy_calibrator(trt, calibration, opt_batch)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)  # TensorRT calibrates at this profile's opt shapes
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise BuildError(f"TensorRT failed to build a {precision} plan from {onnx_path}: {logger.take_errors()}")
    plan_path.write_bytes(bytes(serialized))
    return {"version": trt.__version__, "device": gpu_name()}


def calibration_indices(n_rows: int, batch: int) -> list[np.ndarray]:
    """Rows of each int8 calibration batch: ``ceil(n_rows / batch)`` batches of exactly ``batch`` rows, through the
    rows in order and cycling back to the first when they run out, so that every row is used and every batch is full
    (TensorRT reads ``batch`` rows from each batch's buffer, whatever the data holds).

    Args:
        n_rows: calibration rows available (>= 1).
        batch: the calibration batch, the profile's opt batch (>= 1).
    """
    if n_rows < 1 or batch < 1:
        raise ValueError(f"calibration needs n_rows >= 1 and batch >= 1, got {n_rows}, {batch}")
    return [np.arange(i * batch, (i + 1) * batch) % n_rows for i in range(math.ceil(n_rows / batch))]


def _entropy_calibrator(trt: Any, data: dict[str, np.ndarray], batch: int) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``data`` (rows by input name) in batches of exactly ``batch`` rows
    (:func:`calibration_indices`) through one device buffer per input."""
    rt = cudart()
    n_rows = len(next(iter(data.values())))
    batches = calibration_indices(n_rows, batch)

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.next = 0
            self.device = {name: int(cuda_check(rt.cudaMalloc(rows[:1].nbytes * batch))) for name, rows in data.items()}

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.next >= len(batches):
                return None
            rows = batches[self.next]
            self.next += 1
            kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            for name in names:
                chunk = np.ascontiguousarray(data[name][rows], dtype=np.float32)
                cuda_check(rt.cudaMemcpy(self.device[name], chunk.ctypes.data, chunk.nbytes, kind))
            return [self.device[name] for name in names]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

        def free(self) -> None:
            for ptr in self.device.values():
                cuda_check(rt.cudaFree(ptr))
            self.device = {}

    return Calibrator()


# ---------------------------------------------------------------------------------------------- command
def build_engine_command(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Training checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", help="Engine folder to write, e.g. engines/wave-seg (created).")],
    precision: Annotated[
        str, typer.Option("--precision",
                          help="TensorRT plan precision: fp32, fp16 or int8 (model.onnx is fp32 unless --onnx-int8).")
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
    onnx_int8: Annotated[
        bool,
        typer.Option(
            "--onnx-int8",
            help="Ship model.onnx quantised to int8 for ONNX Runtime on CPU (static QDQ, calibrated on LUDB train "
            "windows; the build fails if it disagrees with fp32 on LUDB val windows). Segment and classify only; "
            "a plan is still built from the fp32 export.",
        ),
    ] = False,
) -> None:
    """Build an engine folder from a checkpoint: model.onnx (checked against PyTorch on real ECG windows), model.plan
    (TensorRT, when tensorrt and a GPU are present) and manifest.json. Load it with `beatssl-edge ... --engine DIR`."""
    try:
        result = build_engine(
            checkpoint, out, precision, max_batch, require_tensorrt, hop_samples, name, data_dir, window_samples,
            onnx_int8,
        )
    except (BuildError, ExportCheckError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    m = result.manifest
    typer.echo(
        f"{out}: {m.task} engine {m.name!r}, leads {','.join(m.leads)}, {m.window_samples} samples at {m.fs_hz:g} Hz"
    )
    typer.echo(f"  model.onnx  opset {m.opset}, max |ORT - PyTorch| = {result.onnx_max_abs_diff:.2e} on real windows")
    if m.onnx_precision == "int8":
        typer.echo(f"  model.onnx  {_int8_line(m.metrics['int8_check'])}")
    if result.plan_skipped is None:
        a = result.plan_agreement
        typer.echo(
            f"  model.plan  {m.precision}, batch 1..{m.max_batch}, max |TRT - PyTorch| = {result.plan_max_abs_diff:.2e}"
            f", argmax agreement with ORT {a['argmax_agreement']:.2%}, max |dp| {a['max_abs_prob_diff']:.3f}"
        )
    else:
        typer.echo(f"warning: no model.plan: {result.plan_skipped}; the engine runs on ONNX Runtime", err=True)


def _int8_line(check: dict[str, Any]) -> str:
    """One line about ``metrics.int8_check`` for the commands' output."""
    return (
        f"int8 (calibrated on {check['calibration_windows']} LUDB train windows), against fp32 on {check['windows']} "
        f"LUDB val windows: argmax agreement {check['argmax_agreement']:.2%}, max |dp| {check['max_abs_prob_diff']:.3f}"
    )


def quantize_engine_command(
    engine: Annotated[Path, typer.Argument(help="fp32 engine folder, e.g. engines/wave-seg.")],
    out: Annotated[
        Path, typer.Option("--out", help="Engine folder to write (may be ENGINE itself: replaced once checked).")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Engine name (default: the folder name).")] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder with ludb/ (calibration and check windows).")
    ] = DEFAULT_DATA_DIR,
    window_samples: Annotated[
        int | None,
        typer.Option(
            "--window-samples",
            min=1,
            help="Segment engines: write the copy for this input window, in samples at the engine rate (250 Hz: "
            "4 ms each; hop = half of it). Must be a multiple of the network's down-sampling (20 for wave-seg) "
            "and at least 2 x its measured receptive-field need (2 x 104 = 208 for wave-seg); fails (exit 1) if "
            "the copy disagrees with ENGINE on the centre of LUDB val windows. Default: ENGINE's window.",
        ),
    ] = None,
    min_centre_agreement: Annotated[
        float,
        typer.Option(
            "--min-centre-agreement",
            min=0.0,
            max=1.0,
            help="With --window-samples: floor of that check, the fraction (0-1) of the central half of the new "
            "window's samples whose wave class is ENGINE's. Lower it only to measure lengths it refuses.",
        ),
    ] = WINDOW_MIN_CENTRE_AGREEMENT,
) -> None:
    """Quantise an fp32 engine folder's model.onnx to int8 for ONNX Runtime on CPU, without its checkpoint: the
    calibration and check of build-engine --onnx-int8; fails (exit 1) if int8 disagrees with fp32 on LUDB val.
    With --window-samples, a segment engine is first re-windowed to that input length (same weights)."""
    try:
        m = quantize_engine(engine, out, name, data_dir, window_samples, min_centre_agreement)
    except (BuildError, ExportCheckError, ManifestError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"{out}: {m.task} engine {m.name!r} from {engine}, {m.window_samples} samples at {m.fs_hz:g} Hz")
    if "window_check" in m.metrics and m.metrics["window_check"]["source_window_samples"] != m.window_samples:
        c = m.metrics["window_check"]
        typer.echo(
            f"  model.onnx  re-windowed from {c['source_window_samples']} samples: wave-class argmax agreement with "
            f"the source on the {c['compared_samples']} of {c['windows']} LUDB val windows {c['argmax_agreement']:.2%}"
        )
    typer.echo(f"  model.onnx  {_int8_line(m.metrics['int8_check'])}")
