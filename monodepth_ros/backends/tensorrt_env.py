"""TensorRT availability and the CUDA environment an engine is tied to, shared by the engine builder
(:mod:`monodepth_ros.backends.tensorrt_build`) and the runtime backend (:mod:`monodepth_ros.backends.tensorrt_backend`).

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot,
and asking :func:`tensorrt_unavailable_reason` needs no TensorRT.
"""

from __future__ import annotations

MIN_TENSORRT_MAJOR = 10


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+/13, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT >= 10, cuda-python and a CUDA device are all present; else why not (for logs/skips)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return f"the 'tensorrt' Python package is not installed ({e})"
    try:
        major = int(str(trt.__version__).split(".")[0])
    except ValueError:
        return f"cannot parse the TensorRT version {trt.__version__!r}"
    if major < MIN_TENSORRT_MAJOR:
        return f"TensorRT {trt.__version__} is older than the required {MIN_TENSORRT_MAJOR}.x"
    try:
        cudart = import_cudart()
    except ImportError as e:
        return f"cuda-python is not installed ({e})"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return f"no CUDA device available ({err})"
    return None


def check_cuda(result, what: str):
    """A cuda-python call's result (error code, or (error code, value, ...)) -> its value(s); RuntimeError on error."""
    cudart = import_cudart()
    err = result[0] if isinstance(result, tuple) else result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    if isinstance(result, tuple):
        return result[1] if len(result) == 2 else result[1:]
    return None


def runtime_environment(device: int = 0) -> dict[str, str]:
    """What an engine is tied to: TensorRT version, GPU name and compute capability of ``device``."""
    import tensorrt as trt

    cudart = import_cudart()
    prop = check_cuda(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {
        "version": str(trt.__version__),
        "device_name": name.rstrip("\x00").strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
    }
