"""Loading an engine folder and running it: :func:`load_engine` -> :class:`Engine` -> :meth:`Engine.infer`.

The backend is chosen once, at load: ``"tensorrt"`` (``model.plan`` on a CUDA GPU), ``"onnxruntime"``
(``model.onnx``; CPU, or CUDA with onnxruntime-gpu) or ``"auto"`` (TensorRT when the folder has a plan and tensorrt,
cuda-python and a GPU are present, else ONNX Runtime). Under ``"auto"`` a plan that is present but will not load
(built on another GPU or TensorRT version, corrupt file) falls back to ONNX Runtime with one warning line saying why;
asked for explicitly, ``"tensorrt"`` that will not load is an :class:`EngineError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Protocol

import numpy as np

from edge.inference.manifest import ONNX_FILE, PLAN_FILE, Manifest, normalise
from edge.inference.onnx_backend import OnnxRuntimeBackend
from edge.inference.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Backend(Protocol):
    """What :class:`Engine` needs from a runtime: run one normalised float32 batch of ``1..max_batch`` windows
    (with its ``(B, K)`` features for a two-input model)."""

    name: str

    def run(self, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """An engine cannot be loaded with the requested backend (the message says why)."""


def run_in_batches(
    run_one: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    x: np.ndarray,
    features: np.ndarray | None,
    max_batch: int,
) -> np.ndarray:
    """Run ``run_one`` on consecutive chunks of at most ``max_batch`` rows and concatenate the results in order.

    The one batching rule of both backends (a TensorRT plan's profile stops at ``max_batch``; ONNX Runtime is split
    the same way so that both see the same batches), used by :meth:`Engine.infer` and by ``train build-engine``.

    Args:
        run_one: a backend's ``run(x, features)`` for one batch.
        x: ``(B, ...)`` model input, ``B >= 1``.
        features: ``(B, K)`` second input, or None for a one-input model.
        max_batch: largest batch passed to ``run_one``.

    Returns:
        float32, the chunks' outputs concatenated along axis 0.
    """
    n = x.shape[0]
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if n < 1:
        raise ValueError("run_in_batches needs at least one row")
    if features is not None and features.shape[0] != n:
        raise ValueError(f"{features.shape[0]} feature rows for {n} windows")
    outs = [
        np.asarray(run_one(x[i : i + max_batch], None if features is None else features[i : i + max_batch]))
        for i in range(0, n, max_batch)
    ]
    return np.concatenate(outs).astype(np.float32, copy=False)


class Engine:
    """A loaded engine: its :class:`~edge.inference.manifest.Manifest` and the backend that runs it.

    Not thread-safe; load one engine per worker thread. Use as a context manager, or call :meth:`close`, to release
    device memory (TensorRT).
    """

    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self.manifest = manifest
        self.backend = backend

    def infer(self, windows_mv: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Run the model on raw windows.

        Args:
            windows_mv: ``(B, C, T)`` windows in mV at ``manifest.fs_hz`` with ``C = manifest.channels`` (leads in
                ``manifest.leads`` order for classify and beat-classify, one lead per window for segment) and
                ``T = manifest.window_samples``. Normalised here as the manifest says; batches larger than
                ``manifest.max_batch`` are run in chunks (:func:`run_in_batches`).
            features: ``(B, len(manifest.feature_names))`` finite values, columns in ``manifest.feature_names`` order,
                passed to the model as given (not normalised); required when the manifest has ``feature_names``,
                refused otherwise.

        Returns:
            float32 logits: ``(B, n_classes)`` for classify and beat-classify, ``(B, n_classes, T)`` for segment,
            classes in ``manifest.class_names`` order. :func:`to_probabilities` turns them into probabilities.

        Raises:
            ValueError: windows or features of the wrong shape, features missing or not expected (one line).
        """
        m = self.manifest
        x = np.asarray(windows_mv)
        if x.ndim != 3 or x.shape[1:] != (m.channels, m.window_samples):
            raise ValueError(
                f"engine {m.name!r} takes (batch, {m.channels}, {m.window_samples}) windows; got {x.shape}"
            )
        f = self._features(features, x.shape[0])
        if x.shape[0] == 0:
            return np.zeros((0, *m.output_shape[1:]), dtype=np.float32)
        return run_in_batches(self.backend.run, normalise(x, m.normalisation), f, m.max_batch)

    def _features(self, features: np.ndarray | None, batch: int) -> np.ndarray | None:
        """The features as float32 ``(batch, K)``, or None for a one-input engine; ValueError when they do not fit."""
        m = self.manifest
        if not m.feature_names:
            if features is not None:
                raise ValueError(f"engine {m.name!r} takes no features (its manifest has no feature_names)")
            return None
        want = f"(batch, {m.n_features}) features [{', '.join(m.feature_names)}]"
        if features is None:
            raise ValueError(f"engine {m.name!r} needs {want} as infer's second argument; got none")
        f = np.asarray(features, dtype=np.float32)
        if f.shape != (batch, m.n_features):
            raise ValueError(f"engine {m.name!r} needs {want} for {batch} windows; got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"engine {m.name!r}: features must be finite; got NaN or inf")
        return np.ascontiguousarray(f)

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


@dataclass(frozen=True)
class BackendOpener:
    """How :func:`load_engine` probes and opens one backend.

    Attributes:
        unavailable_reason: why the backend cannot run on this machine at all (one line), or None.
        open: ``(folder, manifest, threads) -> Backend``; raises when this engine's file will not load.
    """

    unavailable_reason: Callable[[], str | None]
    open: Callable[[Path, Manifest, int | None], Backend]


def _feature_input(manifest: Manifest) -> str | None:
    return manifest.feature_input_name if manifest.feature_names else None


def _open_onnxruntime(folder: Path, manifest: Manifest, threads: int | None) -> Backend:
    return OnnxRuntimeBackend(
        folder / ONNX_FILE, manifest.input_name, manifest.output_names[0], threads, _feature_input(manifest)
    )


def _open_tensorrt(folder: Path, manifest: Manifest, threads: int | None) -> Backend:
    return TensorRTBackend(
        folder / PLAN_FILE,
        manifest.input_name,
        manifest.output_names[0],
        manifest.max_batch,
        manifest.tensorrt,
        _feature_input(manifest),
    )


#: The backends :func:`load_engine` opens, by name. Pass another mapping to ``load_engine(openers=...)`` to put a
#: different runtime behind a name (tests use it to make TensorRT "available" on a machine without a GPU).
OPENERS: Mapping[str, BackendOpener] = MappingProxyType(
    {
        "onnxruntime": BackendOpener(lambda: None, _open_onnxruntime),
        "tensorrt": BackendOpener(tensorrt_unavailable_reason, _open_tensorrt),
    }
)


def choose_backend(manifest: Manifest, backend: str = "auto", openers: Mapping[str, BackendOpener] = OPENERS) -> str:
    """Resolve ``backend`` for an engine to ``"onnxruntime"`` or ``"tensorrt"`` (before trying to open it).

    Raises:
        EngineError: ``"tensorrt"`` was asked for but the folder has no plan or TensorRT cannot run here.
    """
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime":
        return backend
    if manifest.has_plan:
        reason = openers["tensorrt"].unavailable_reason()
    else:
        reason = f"engine {manifest.name!r} has no {PLAN_FILE} (rebuild it with `train build-engine` on a GPU)"
    if reason is None:
        return "tensorrt"
    if backend == "tensorrt":
        raise EngineError(f"backend 'tensorrt' is not available: {reason}")
    return "onnxruntime"


def load_engine(
    folder: Path | str,
    backend: str = "auto",
    threads: int | None = None,
    openers: Mapping[str, BackendOpener] = OPENERS,
) -> Engine:
    """Load and validate an engine folder and open it on a backend.

    Args:
        folder: engine folder with ``manifest.json``, ``model.onnx`` and optionally ``model.plan``.
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"`` (see the module docstring).
        threads: ONNX Runtime intra-op threads (its default when None); ignored by TensorRT.
        openers: the backends by name (:data:`OPENERS`).

    Raises:
        ManifestError: the manifest or a file does not validate.
        EngineError: the requested backend cannot run this engine here (one line); under ``"auto"`` a plan that will
            not load is a warning and the engine runs on ONNX Runtime.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    chosen = choose_backend(manifest, backend, openers)
    if chosen == "tensorrt":
        try:
            return Engine(manifest, openers["tensorrt"].open(folder, manifest, threads))
        except Exception as e:  # deserialisation, CUDA and shape failures have no common type
            reason = " ".join(str(e).split()) or type(e).__name__
            if backend == "tensorrt":
                raise EngineError(f"backend 'tensorrt' cannot load engine {manifest.name!r}: {reason}") from e
            log.warning("engine %r: %s will not load, running on ONNX Runtime: %s", manifest.name, PLAN_FILE, reason)
    return Engine(manifest, openers["onnxruntime"].open(folder, manifest, threads))
