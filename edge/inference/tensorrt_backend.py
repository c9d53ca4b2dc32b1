"""TensorRT backend: deserialises ``model.plan`` and runs it on a CUDA stream.

TensorRT and cuda-python (device memory, copies, streams) are optional (the ``[tensorrt]`` extra) and imported only
inside the functions here, so machines without them never load them. pycuda is not used: it has no wheel and does
not build here.

A plan is tied to the TensorRT version and the GPU it was built on; the manifest records both
(``tensorrt.version``, ``tensorrt.device``) so that a failed deserialisation can say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def cudart() -> Any:
    """The CUDA runtime module of cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` in releases before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # type: ignore[no-redef]
    return runtime


def cuda_check(result: Any) -> Any:
    """Unwrap a cuda-python call's ``(error, *values)`` tuple, raising ``RuntimeError`` on a CUDA error.

    Returns:
        None, the single value, or a tuple of values.
    """
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {err}: {text.decode() if isinstance(text, bytes) else text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here (one line); None when tensorrt, cuda-python and a GPU are present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"the tensorrt Python package is not installed ({e}); install the [tensorrt] extra"
    try:
        rt = cudart()
    except ImportError as e:
        return f"cuda-python is not installed ({e}); install the [tensorrt] extra"
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        return f"no CUDA GPU is visible (cudaGetDeviceCount: {err}, {count} devices)"
    return None


def gpu_name() -> str:
    """Name of CUDA device 0, e.g. ``"NVIDIA H100 80GB HBM3"`` or ``"Orin"``."""
    props = cuda_check(cudart().cudaGetDeviceProperties(0))
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()


class TensorRTBackend:
    """A deserialised TensorRT plan with its execution context, device buffers and CUDA stream.

    Device buffers are allocated once for ``max_batch`` windows; each :meth:`run` sets the input shape (the plan's
    optimisation profile covers batch ``1..max_batch``), copies the batch in, runs on the stream and copies the output
    back. Input and output stay float32 whatever the plan's inner precision. Not thread-safe: one backend per thread.
    Call :meth:`close` to free the device memory.

    Args:
        plan_path: path of ``model.plan``.
        input_name: name of the input tensor.
        output_name: name of the output tensor.
        max_batch: largest batch :meth:`run` accepts; the plan's profile must allow it.
        built_with: the manifest's ``tensorrt`` record, quoted when the plan does not deserialise.
    """

    name = "tensorrt"

    def __init__(
        self, plan_path: Path, input_name: str, output_name: str, max_batch: int, built_with: dict[str, str]
    ) -> None:
        import tensorrt as trt

        self._rt = cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise RuntimeError(
                f"{plan_path}: TensorRT {trt.__version__} on {gpu_name()} could not deserialise the plan (built with "
                f"TensorRT {built_with.get('version', '?')} on {built_with.get('device', '?')}); rebuild it on this "
                "device with `train build-engine`, or use --backend onnxruntime"
            )
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if names != {input_name, output_name}:
            raise RuntimeError(
                f"{plan_path}: plan tensors {sorted(names)} != the manifest's {input_name}, {output_name}"
            )
        for name in names:
            dtype = self._engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise RuntimeError(f"{plan_path}: tensor {name!r} is {dtype}, not float32")
        profile_max = tuple(self._engine.get_tensor_profile_shape(input_name, 0)[2])  # (min, opt, max)[max]
        if profile_max[0] < max_batch:
            raise RuntimeError(f"{plan_path}: the plan's profile stops at batch {profile_max[0]} < {max_batch}")
        self._context = self._engine.create_execution_context()
        self._input_name, self._output_name = input_name, output_name
        self.max_batch = max_batch
        self._context.set_input_shape(input_name, (max_batch, *profile_max[1:]))
        out_max = tuple(self._context.get_tensor_shape(output_name))
        self._buffers: list[int] = []
        self._stream = None
        self._d_input = self._malloc(4 * int(np.prod((max_batch, *profile_max[1:]))))
        self._d_output = self._malloc(4 * int(np.prod(out_max)))
        self._context.set_tensor_address(input_name, self._d_input)
        self._context.set_tensor_address(output_name, self._d_output)
        self._stream = cuda_check(self._rt.cudaStreamCreate())

    def _malloc(self, nbytes: int) -> int:
        ptr = int(cuda_check(self._rt.cudaMalloc(nbytes)))
        self._buffers.append(ptr)
        return ptr

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch of ``1..max_batch`` float32 C-contiguous windows; returns the float32 output on the host."""
        if not 1 <= x.shape[0] <= self.max_batch:
            raise ValueError(f"batch {x.shape[0]} is outside the plan's profile 1..{self.max_batch}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        rt, stream = self._rt, self._stream
        if not self._context.set_input_shape(self._input_name, x.shape):
            raise ValueError(f"the plan does not accept input shape {x.shape}")
        out = np.empty(tuple(self._context.get_tensor_shape(self._output_name)), dtype=np.float32)
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(rt.cudaMemcpyAsync(self._d_input, x.ctypes.data, x.nbytes, h2d, stream))
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        cuda_check(rt.cudaMemcpyAsync(out.ctypes.data, self._d_output, out.nbytes, d2h, stream))
        cuda_check(rt.cudaStreamSynchronize(stream))
        return out

    def close(self) -> None:
        """Free the device buffers and the stream (idempotent)."""
        for ptr in self._buffers:
            cuda_check(self._rt.cudaFree(ptr))
        self._buffers = []
        if self._stream is not None:
            cuda_check(self._rt.cudaStreamDestroy(self._stream))
            self._stream = None
