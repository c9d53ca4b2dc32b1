"""TensorRT backend: deserialises ``model.plan`` and runs it on a CUDA stream.

TensorRT and cuda-python (device memory, copies, streams) are optional (the ``[tensorrt]`` extra) and imported only
inside the functions here, so machines without them never load them. pycuda is not used: it has no wheel and does
not build here.

A plan is tied to the TensorRT version and the GPU it was built on; the manifest records both
(``tensorrt.version``, ``tensorrt.device``) so that a failed deserialisation can say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_LOGGER: Any = None


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


def trt_logger() -> Any:
    """The one TensorRT logger of this process (builders and runtimes share it, as TensorRT asks).

    It forwards TensorRT's warnings to this module's :mod:`logging` logger and keeps its error messages, which
    :meth:`take_errors` returns (and clears) so that a failure can be reported in one line.
    """
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        class CollectingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    self.errors.append(" ".join(str(msg).split()))
                elif severity == trt.ILogger.Severity.WARNING:
                    log.warning("TensorRT: %s", msg)

            def take_errors(self) -> str:
                text, self.errors = "; ".join(self.errors), []
                return text

        _LOGGER = CollectingLogger()
    return _LOGGER


class TensorRTBackend:
    """A deserialised TensorRT plan with its execution context, device buffers and CUDA stream.

    Device buffers are allocated once for ``max_batch`` windows; each :meth:`run` sets the input shapes (the plan's
    optimisation profile covers batch ``1..max_batch``), copies the batch in, runs ``execute_async_v3`` on the stream
    and copies the output back. Inputs and output stay float32 whatever the plan's inner precision. Bigger batches are
    :func:`edge.inference.engine.run_in_batches`' job. Not thread-safe: one backend per thread. Call :meth:`close` to
    free the device memory.

    Args:
        plan_path: path of ``model.plan``.
        input_name: name of the windows input tensor ``(B, C, T)``.
        output_name: name of the output tensor.
        max_batch: largest batch :meth:`run` accepts; the plan's profile must allow it.
        built_with: the manifest's ``tensorrt`` record, quoted when the plan does not deserialise.
        feature_input_name: name of the ``(B, K)`` features input of a two-input plan; None for one input.

    Raises:
        RuntimeError: the plan does not deserialise here or does not match the manifest (one line).
    """

    name = "tensorrt"

    def __init__(
        self,
        plan_path: Path,
        input_name: str,
        output_name: str,
        max_batch: int,
        built_with: dict[str, str],
        feature_input_name: str | None = None,
    ) -> None:
        import tensorrt as trt

        self._rt = cudart()
        self._buffers: list[int] = []
        self._stream: Any = None
        logger = trt_logger()
        logger.take_errors()
        self._runtime = trt.Runtime(logger)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        except (RuntimeError, TypeError, ValueError) as e:  # some releases raise rather than return None
            logger.errors.append(" ".join(str(e).split()))
            self._engine = None
        if self._engine is None:
            raise RuntimeError(
                f"{plan_path}: TensorRT {trt.__version__} on {gpu_name()} could not deserialise the plan (built with "
                f"TensorRT {built_with.get('version', '?')} on {built_with.get('device', '?')}: "
                f"{logger.take_errors() or 'no reason given'}); rebuild it on this device with `train build-engine`, "
                "or use --backend onnxruntime"
            )
        self._inputs = (input_name,) if feature_input_name is None else (input_name, feature_input_name)
        self._output_name = output_name
        self.max_batch = max_batch
        self._check_tensors(trt, plan_path)
        self._context = self._engine.create_execution_context()
        try:
            self._allocate()
        except Exception:
            self.close()
            raise

    def _check_tensors(self, trt: Any, plan_path: Path) -> None:
        """The plan's tensors are the manifest's, float32, and its profile 0 reaches ``max_batch``."""
        engine = self._engine
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        if names != {*self._inputs, self._output_name}:
            raise RuntimeError(
                f"{plan_path}: plan tensors {sorted(names)} != the manifest's {[*self._inputs, self._output_name]}"
            )
        for name in names:
            dtype = engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise RuntimeError(f"{plan_path}: tensor {name!r} is {dtype}, not float32")
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input != (name in self._inputs):
                kind = "an input" if is_input else "an output"
                raise RuntimeError(f"{plan_path}: tensor {name!r} is {kind} of the plan, not of the manifest")
        for name in self._inputs:
            profile_max = tuple(engine.get_tensor_profile_shape(name, 0)[2])  # (min, opt, max)[max]
            if profile_max[0] < self.max_batch:
                raise RuntimeError(
                    f"{plan_path}: the plan's profile stops at batch {profile_max[0]} < {self.max_batch} ({name!r})"
                )

    def _allocate(self) -> None:
        """Device buffers for ``max_batch`` windows on every input and the output, and the CUDA stream."""
        self._shapes: dict[str, tuple[int, ...]] = {}
        for name in self._inputs:
            per_window = tuple(self._engine.get_tensor_profile_shape(name, 0)[2])[1:]
            self._shapes[name] = per_window
            if not self._context.set_input_shape(name, (self.max_batch, *per_window)):
                raise RuntimeError(f"the plan refuses input {name!r} of shape {(self.max_batch, *per_window)}")
        self._device = {n: self._malloc(4 * self.max_batch * int(np.prod(self._shapes[n]))) for n in self._inputs}
        out_max = tuple(self._context.get_tensor_shape(self._output_name))
        self._device[self._output_name] = self._malloc(4 * int(np.prod(out_max)))
        for name, ptr in self._device.items():
            self._context.set_tensor_address(name, ptr)
        self._stream = cuda_check(self._rt.cudaStreamCreate())

    def _malloc(self, nbytes: int) -> int:
        ptr = int(cuda_check(self._rt.cudaMalloc(nbytes)))
        self._buffers.append(ptr)
        return ptr

    def run(self, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Run one batch of ``1..max_batch`` windows ``(B, C, T)`` (and ``(B, K)`` features for a two-input plan);
        returns the float32 output on the host."""
        if not 1 <= x.shape[0] <= self.max_batch:
            raise ValueError(f"batch {x.shape[0]} is outside the plan's profile 1..{self.max_batch}")
        if (features is None) != (len(self._inputs) == 1):
            raise ValueError(f"features given to a one-input plan, or missing for a two-input one ({self._inputs})")
        arrays = [x] if features is None else [x, features]
        rt, stream = self._rt, self._stream
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host = []  # keep the contiguous copies alive until the stream is synchronised
        for name, array in zip(self._inputs, arrays, strict=True):
            a = np.ascontiguousarray(array, dtype=np.float32)
            if a.shape[0] != x.shape[0] or not self._context.set_input_shape(name, a.shape):
                raise ValueError(f"the plan does not accept input {name!r} of shape {a.shape}")
            cuda_check(rt.cudaMemcpyAsync(self._device[name], a.ctypes.data, a.nbytes, h2d, stream))
            host.append(a)
        out = np.empty(tuple(self._context.get_tensor_shape(self._output_name)), dtype=np.float32)
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        cuda_check(rt.cudaMemcpyAsync(out.ctypes.data, self._device[self._output_name], out.nbytes, d2h, stream))
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
