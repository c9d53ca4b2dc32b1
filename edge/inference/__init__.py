"""Running engine folders on the edge: one small interface (:meth:`Engine.infer`), two backends (ONNX Runtime,
TensorRT). TensorRT and cuda-python are imported lazily, only when the TensorRT backend is used or probed."""

from edge.inference.engine import (
    BACKENDS,
    OPENERS,
    BackendOpener,
    Engine,
    EngineError,
    choose_backend,
    load_engine,
    run_in_batches,
    to_probabilities,
)
from edge.inference.manifest import LeadMismatchError, Manifest, ManifestError
from edge.inference.tensorrt_backend import tensorrt_unavailable_reason

__all__ = [
    "BACKENDS",
    "OPENERS",
    "BackendOpener",
    "Engine",
    "EngineError",
    "LeadMismatchError",
    "Manifest",
    "ManifestError",
    "choose_backend",
    "load_engine",
    "run_in_batches",
    "tensorrt_unavailable_reason",
    "to_probabilities",
]
