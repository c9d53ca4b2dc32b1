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
        input_name: name of the input tensor.
        output_name: name of the output tensor to return.
        threads: intra-op threads (ONNX Runtime's default, one per physical core, when None).
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, input_name: str, output_name: str, threads: int | None = None) -> None:
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
        self._output_names = [output_name]
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch: ``x`` is the normalised float32 input, the result the float32 output tensor."""
        return self._session.run(self._output_names, {self._input_name: x})[0]

    def close(self) -> None:
        """Nothing to release explicitly (the session is freed with the object)."""
