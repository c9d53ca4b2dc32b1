"""Loading an engine folder and running it: :func:`load_engine` -> :class:`Engine` -> :meth:`Engine.infer`.

The backend is chosen once, at load: ``"tensorrt"`` (``model.plan`` on a CUDA GPU), ``"onnxruntime"``
(``model.onnx``; CPU, or CUDA with onnxruntime-gpu) or ``"auto"`` (TensorRT when the folder has a plan and tensorrt,
cuda-python and a GPU are present, else ONNX Runtime).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np

from edge.inference.manifest import ONNX_FILE, PLAN_FILE, Manifest, normalise
from edge.inference.onnx_backend import OnnxRuntimeBackend
from edge.inference.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Backend(Protocol):
    """What :class:`Engine` needs from a runtime: run one normalised float32 batch of ``1..max_batch`` windows."""

    name: str

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """An engine cannot be loaded with the requested backend (the message says why)."""


class Engine:
    """A loaded engine: its :class:`~edge.inference.manifest.Manifest` and the backend that runs it.

    Not thread-safe; load one engine per worker thread. Use as a context manager, or call :meth:`close`, to release
    device memory (TensorRT).
    """

    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self.manifest = manifest
        self.backend = backend

    def infer(self, windows_mv: np.ndarray) -> np.ndarray:
        """Run the model on raw windows.

        Args:
            windows_mv: ``(B, C, T)`` windows in mV at ``manifest.fs_hz`` with ``C = manifest.channels`` (leads in
                ``manifest.leads`` order for classify, one lead per window for segment) and
                ``T = manifest.window_samples``. Normalised here as the manifest says; batches larger than
                ``manifest.max_batch`` are run in chunks.

        Returns:
            float32 logits: ``(B, n_classes)`` for classify, ``(B, n_classes, T)`` for segment, classes in
            ``manifest.class_names`` order. :func:`to_probabilities` turns them into probabilities.
        """
        m = self.manifest
        x = np.asarray(windows_mv)
        if x.ndim != 3 or x.shape[1:] != (m.channels, m.window_samples):
            raise ValueError(
                f"engine {m.name!r} takes (batch, {m.channels}, {m.window_samples}) windows; got {x.shape}"
            )
        x = normalise(x, m.normalisation)
        if x.shape[0] <= m.max_batch:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + m.max_batch]) for i in range(0, x.shape[0], m.max_batch)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            n_out = len(self.manifest.class_names)
            shape = (0, n_out) if self.manifest.task == "classify" else (0, n_out, self.manifest.window_samples)
            return np.zeros(shape, dtype=np.float32)
        return np.asarray(self.backend.run(x), dtype=np.float32)

    def close(self) -> None:
        """Release the backend's resources."""
        self.backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def to_probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    """Turn :meth:`Engine.infer` logits into probabilities: ``"sigmoid"`` per value, ``"softmax"`` over axis 1."""
    z = np.asarray(logits, dtype=np.float32)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if activation == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown activation {activation!r}")


def choose_backend(manifest: Manifest, backend: str = "auto") -> str:
    """Resolve ``backend`` for an engine to ``"onnxruntime"`` or ``"tensorrt"``.

    Raises:
        EngineError: ``"tensorrt"`` was asked for but the folder has no plan or TensorRT cannot run here.
    """
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime":
        return backend
    if manifest.has_plan:
        reason = tensorrt_unavailable_reason()
    else:
        reason = f"engine {manifest.name!r} has no {PLAN_FILE} (rebuild it with `train build-engine` on a GPU)"
    if reason is None:
        return "tensorrt"
    if backend == "tensorrt":
        raise EngineError(f"backend 'tensorrt' is not available: {reason}")
    return "onnxruntime"


def load_engine(folder: Path | str, backend: str = "auto", threads: int | None = None) -> Engine:
    """Load and validate an engine folder and open it on a backend.

    Args:
        folder: engine folder with ``manifest.json``, ``model.onnx`` and optionally ``model.plan``.
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"`` (see the module docstring).
        threads: ONNX Runtime intra-op threads (its default when None); ignored by TensorRT.

    Raises:
        ManifestError: the manifest or a file does not validate.
        EngineError: the requested backend cannot run this engine here.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    chosen = choose_backend(manifest, backend)
    if chosen == "tensorrt":
        runner: Backend = TensorRTBackend(
            folder / PLAN_FILE, manifest.input_name, manifest.output_names[0], manifest.max_batch, manifest.tensorrt
        )
    else:
        runner = OnnxRuntimeBackend(folder / ONNX_FILE, manifest.input_name, manifest.output_names[0], threads)
    return Engine(manifest, runner)
