"""ONNX Runtime backend: runs ``model.onnx`` on the CPU execution provider, or CUDA with onnxruntime-gpu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeBackend:
    """One ONNX Runtime session over an engine's ``model.onnx``.

    The CUDA execution provider is used when onnxruntime-gpu provides it (CPU stays as the fallback for any node
    it cannot run); otherwise the CPU provider alone. Not thread-safe: one backend per thread.

    Args:
        onnx_path: path of ``model.onnx``.
        input_name: name of the windows input tensor.
        output_name: name of the output tensor to return.
        threads: intra-op threads (ONNX Runtime's default, one per physical core, when None).
        feature_input_name: name of the second input, ``(B, K)`` features, for a two-input model; None for one input.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        input_name: str,
        output_name: str,
        threads: int | None = None,
        feature_input_name: str | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        providers = [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in ort.get_available_providers() else [CPU_PROVIDER]
        self._session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        self._input_name = input_name
        self._feature_input_name = feature_input_name
        self._output_names = [output_name]
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        inputs = {i.name for i in self._session.get_inputs()}
        wanted = {input_name} | ({feature_input_name} if feature_input_name else set())
        if inputs != wanted:
            raise ValueError(f"{onnx_path}: model inputs {sorted(inputs)} != the manifest's {sorted(wanted)}")

    def run(self, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Run one batch: ``x`` is the normalised float32 ``(B, C, T)`` input and ``features`` the float32
        ``(B, K)`` second input of a two-input model (None otherwise); returns the float32 output tensor."""
        feeds = {self._input_name: x}
        if (features is None) != (self._feature_input_name is None):
            raise ValueError(f"features given to a one-input model, or missing for input {self._feature_input_name!r}")
        if self._feature_input_name is not None:
            feeds[self._feature_input_name] = features
        return self._session.run(self._output_names, feeds)[0]

    def close(self) -> None:
        """Nothing to release explicitly (the session is freed with the object)."""
