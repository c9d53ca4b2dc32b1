"""ONNX export of a trained model and its check against PyTorch on real ECG windows.

:func:`export_onnx` writes ``model.onnx`` with a dynamic batch axis and a pinned opset; :func:`reference_windows`
cuts real LUDB windows (mV, resampled to the engine's rate); :func:`max_abs_diff` compares any runtime with the
PyTorch model on them after the same :func:`edge.inference.manifest.normalise` the edge applies at run time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edge.inference.manifest import Normalisation, normalise
from offline.records import read_record
from train.data.rate import to_internal_rate

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


def export_onnx(model: torch.nn.Module, path: Path, channels: int, window_samples: int) -> None:
    """Export ``model`` (eval mode) to ONNX at opset :data:`OPSET` with a dynamic batch axis.

    Args:
        model: maps ``(B, channels, window_samples)`` float32 to one float32 output whose first axis is the batch.
        path: the ``.onnx`` file to write (weights embedded).
        channels: input channels (leads for classify, 1 for segment).
        window_samples: input length (samples).
    """
    model.eval()
    example = torch.zeros(2, channels, window_samples)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript (not a dependency here).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
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
    windows: list[np.ndarray] = []
    for name in records_file.read_text().split():
        record = read_record(ludb / name, leads=None if per_lead else leads)
        sig = to_internal_rate(record.signal_mv.T, record.fs_hz, fs_hz)
        if sig.shape[1] < window_samples:
            raise ValueError(f"LUDB records are {sig.shape[1]} samples at {fs_hz} Hz, shorter than {window_samples}")
        window = sig[:, :window_samples]
        windows.extend(window[:, None, :] if per_lead else window[None])
        if len(windows) >= n_windows:
            break
    return np.stack(windows[:n_windows]).astype(np.float32)


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """PyTorch eager forward (no grad) of a normalised float32 batch."""
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def max_abs_diff(
    model: torch.nn.Module,
    run: Callable[[np.ndarray], np.ndarray],
    windows_mv: np.ndarray,
    spec: Normalisation,
) -> float:
    """Largest absolute difference between ``run`` and the PyTorch model over the windows (logit units).

    Args:
        model: the PyTorch model (eval mode).
        run: a runtime's forward on a normalised float32 batch (e.g. an ONNX Runtime backend's ``run``).
        windows_mv: ``(B, C, T)`` raw windows (mV).
        spec: the engine's normalisation, applied once for both.
    """
    x = normalise(windows_mv, spec)
    return float(np.max(np.abs(run(x) - torch_logits(model, x))))
