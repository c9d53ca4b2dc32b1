"""ONNX export of a trained model and the real inputs it is checked on against PyTorch.

:func:`export_onnx` writes ``model.onnx`` with a dynamic batch axis (on both inputs of a two-input model) and a pinned
opset; :func:`reference_windows` cuts real LUDB windows and :func:`reference_beats` real MIT-BIH beat windows (mV,
resampled to the engine's rate); :func:`reference_features` gives the fixed second input of a two-input model;
:func:`torch_logits` is the PyTorch side of every comparison, on inputs normalised with the same
:func:`edge.inference.manifest.normalise` the edge applies at run time.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from edge.ecg import MITDB_TO_AAMI
from edge.inference.manifest import DEFAULT_FEATURE_INPUT
from offline.records import RecordError, read_annotations, read_record
from train.data.rate import rescale_samples, to_internal_rate

#: ONNX opset of every exported engine (TensorRT 8.6+ and ONNX Runtime 1.17+ both run it).
OPSET = 17
#: Tensor names of every exported engine.
INPUT_NAME = "ecg"
OUTPUT_NAME = "logits"
#: Largest max |ONNX Runtime - PyTorch| on the check windows accepted for an fp32 export (logit units).
FP32_TOLERANCE = 1e-4
#: Default folder of the real records (``../shared/data`` beside the checkout).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


class ExportCheckError(RuntimeError):
    """The exported model disagrees with PyTorch beyond the tolerance."""


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    channels: int,
    window_samples: int,
    n_features: int = 0,
    feature_input_name: str = DEFAULT_FEATURE_INPUT,
) -> None:
    """Export ``model`` (eval mode) to ONNX at opset :data:`OPSET` with a dynamic batch axis on every input.

    Args:
        model: maps ``(B, channels, window_samples)`` float32 — and, when ``n_features > 0``, a second ``(B,
            n_features)`` float32 argument (``forward(x, features)``) — to one float32 output whose first axis is the
            batch.
        path: the ``.onnx`` file to write (weights embedded).
        channels: input channels (leads for classify and beat-classify, 1 for segment).
        window_samples: input length (samples).
        n_features: columns of the second input (0: a one-input model).
        feature_input_name: name of the second input.
    """
    model.eval()
    example: tuple[torch.Tensor, ...] = (torch.zeros(2, channels, window_samples),)
    names = [INPUT_NAME]
    if n_features > 0:
        example = (*example, torch.zeros(2, n_features))
        names.append(feature_input_name)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript (not a dependency here).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in (*names, OUTPUT_NAME)},
            do_constant_folding=True,
        )


def reference_windows(
    leads: tuple[str, ...],
    per_lead: bool,
    fs_hz: float,
    window_samples: int,
    n_windows: int = 32,
    data_dir: Path = DEFAULT_DATA_DIR,
) -> np.ndarray:
    """Real ECG windows from LUDB (12 leads, 500 Hz, 10 s records), resampled to ``fs_hz``.

    Args:
        leads: the engine's leads, in channel order.
        per_lead: True for a single-lead engine (segment): every lead of every record gives a ``(1, T)`` window.
        fs_hz: the engine's sampling rate (Hz).
        window_samples: window length (samples at ``fs_hz``); one window from the start of each record.
        n_windows: how many windows to return.
        data_dir: folder holding ``ludb/``.

    Returns:
        ``(n_windows, C, window_samples)`` float32 in mV, ``C = 1`` when ``per_lead`` else ``len(leads)``.

    Raises:
        FileNotFoundError: no LUDB under ``data_dir``.
        offline.records.RecordError: a lead LUDB lacks.
        ValueError: records shorter than a window.
    """
    ludb = Path(data_dir) / "ludb"
    records_file = ludb / "RECORDS"
    if not records_file.is_file():
        raise FileNotFoundError(f"{records_file} is missing: the export check needs real LUDB records (--data-dir)")
    paths = [ludb / name for name in records_file.read_text().split()]
    return first_windows(paths, leads, per_lead, fs_hz, window_samples, n_windows)


def first_windows(paths: list[Path], leads: tuple[str, ...], per_lead: bool, fs_hz: float, window_samples: int,
                  n_windows: int) -> np.ndarray:
    """The first ``window_samples`` of each LUDB record in ``paths`` (in order) at ``fs_hz`` (Hz), until there are
    ``n_windows`` rows: ``(n, C, window_samples)`` float32 mV, one row per lead when ``per_lead`` (``C = 1``), else
    one per record with ``leads`` in order.

    Raises:
        ValueError: records shorter than a window.
    """
    windows: list[np.ndarray] = []
    for path in paths:
        record = read_record(path, leads=None if per_lead else leads)
        sig = to_internal_rate(record.signal_mv.T, record.fs_hz, fs_hz)
        if sig.shape[1] < window_samples:
            raise ValueError(f"LUDB records are {sig.shape[1]} samples at {fs_hz} Hz, shorter than {window_samples}")
        window = sig[:, :window_samples]
        windows.extend(window[:, None, :] if per_lead else window[None])
        if len(windows) >= n_windows:
            break
    return np.stack(windows[:n_windows]).astype(np.float32)


def reference_beats(
    leads: tuple[str, ...],
    fs_hz: float,
    window_samples: int,
    r_offset_samples: int,
    n_windows: int = 32,
    data_dir: Path = DEFAULT_DATA_DIR,
) -> np.ndarray:
    """Real beat windows from MIT-BIH: each starts ``r_offset_samples`` before an annotated beat (every symbol of
    :data:`edge.ecg.MITDB_TO_AAMI`), resampled to ``fs_hz``.

    Beats are taken evenly spaced through each record, ``ceil(n_windows / 8)`` per record, from the records (in
    ``RECORDS`` order) that carry every one of ``leads``, so that the windows span several patients and beat types.

    Args:
        leads: the engine's leads, in channel order (MIT-BIH names, e.g. ``("MLII",)``).
        fs_hz: the engine's sampling rate (Hz).
        window_samples: window length (samples at ``fs_hz``).
        r_offset_samples: samples of the window before the R peak.
        n_windows: how many windows to return (fewer when the records run out).
        data_dir: folder holding ``mitdb/``.

    Returns:
        ``(n, len(leads), window_samples)`` float32 in mV.

    Raises:
        FileNotFoundError: no MIT-BIH under ``data_dir``.
        ValueError: no MIT-BIH record carries the leads.
    """
    mitdb = Path(data_dir) / "mitdb"
    records_file = mitdb / "RECORDS"
    if not records_file.is_file():
        raise FileNotFoundError(f"{records_file} is missing: beat engines are checked on real MIT-BIH beats")
    per_record = math.ceil(n_windows / 8)
    windows: list[np.ndarray] = []
    for name in records_file.read_text().split():
        try:
            record = read_record(mitdb / name, leads=leads)
        except RecordError:
            continue  # this record lacks one of the leads
        sig = to_internal_rate(record.signal_mv.T, record.fs_hz, fs_hz)
        samples, symbols = read_annotations(mitdb / name)
        starts = rescale_samples(samples[[s in MITDB_TO_AAMI for s in symbols]], record.fs_hz, fs_hz) - r_offset_samples
        starts = starts[(starts >= 0) & (starts + window_samples <= sig.shape[1])]
        for start in starts[np.linspace(0, len(starts) - 1, min(per_record, len(starts))).astype(int)]:
            windows.append(sig[:, start : start + window_samples])
        if len(windows) >= n_windows:
            break
    if not windows:
        raise ValueError(f"no MIT-BIH record in {mitdb} has leads {list(leads)}")
    return np.stack(windows[:n_windows]).astype(np.float32)


def reference_features(n_windows: int, n_features: int, seed: int = 0) -> np.ndarray:
    """The second input of a two-input model for the export check and calibration: a fixed-seed standard normal
    ``(n_windows, n_features)`` float32 draw.

    The check measures numerical agreement between runtimes, not accuracy, and the engine build does not know how the
    model's features are computed; the draw is the same on every build.
    """
    return np.random.default_rng(seed).standard_normal((n_windows, n_features)).astype(np.float32)


def torch_logits(model: torch.nn.Module, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """PyTorch eager forward (no grad) of a normalised float32 batch (and its ``(B, K)`` features, if any)."""
    with torch.inference_mode():
        if features is None:
            return model(torch.from_numpy(x)).numpy()
        return model(torch.from_numpy(x), torch.from_numpy(features)).numpy()
