"""TensorRT availability and the CUDA environment an engine is tied to, shared by the engine builder
(:mod:`monodepth_ros.backends.tensorrt_build`) and the runtime backend (:mod:`monodepth_ros.backends.tensorrt_backend`).

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot,
and asking :func:`tensorrt_unavailable_reason` needs no TensorRT. Supported: TensorRT 10.x and 11.x (11 builds
only strongly typed networks; :func:`monodepth_ros.backends.tensorrt_build.build_plan` is where the two differ).
A newer major is refused: its build API is unknown, and a half-working engine is worse than the fallback.
"""

from __future__ import annotations

import importlib
import logging
import threading

MIN_TENSORRT_MAJOR = 10
MAX_TENSORRT_MAJOR = 11  # the newest major this code was written and tested for


def say(logger, level: str, msg: str) -> None:
    """Log ``msg`` (already formatted) at ``level`` on a logging.Logger or an rclpy logger (no %-args there;
    its method is ``warn`` on older distros)."""
    logger = logger or logging.getLogger("monodepth_ros.backends.tensorrt")
    fn = getattr(logger, level, None) or getattr(logger, "warn" if level == "warning" else "info")
    fn(msg)


def tensorrt_major(version: str) -> int:
    """``"10.3.0.26"`` -> 10; ValueError when the version does not start with a number."""
    return int(str(version).split(".")[0])


def tensorrt_version_problem(version: str) -> str | None:
    """Why TensorRT ``version`` cannot be used by this code (too old, newer than tested, unparseable), or None."""
    try:
        major = tensorrt_major(version)
    except ValueError:
        return f"cannot parse the TensorRT version {version!r}"
    if major < MIN_TENSORRT_MAJOR:
        return f"TensorRT {version} is older than the required {MIN_TENSORRT_MAJOR}.x"
    if major > MAX_TENSORRT_MAJOR:
        return (f"TensorRT {version} is not supported: this code is tested with TensorRT {MIN_TENSORRT_MAJOR}.x to "
                f"{MAX_TENSORRT_MAJOR}.x, and each major changed the engine-build API; install TensorRT "
                f"{MAX_TENSORRT_MAJOR} or update monodepth_ros")
    return None


def import_cudart(import_module=importlib.import_module):
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+/13, ``cuda.cudart`` before)."""
    try:
        return import_module("cuda.bindings.runtime")
    except ImportError:
        return import_module("cuda.cudart")  # older cuda-python layout


def tensorrt_unavailable_reason(import_module=importlib.import_module) -> str | None:
    """None when a supported TensorRT (:func:`tensorrt_version_problem`), cuda-python and a CUDA device are all
    present; else why not (for logs and skips).

    Never raises: a broken install (``libnvinfer`` missing, a CUDA driver older than the toolkit) raises OSError
    or RuntimeError on import rather than ImportError, and ``auto`` must then fall back to another backend with
    this reason logged instead of the node dying. ``import_module`` is replaceable for tests.
    """
    try:
        trt = import_module("tensorrt")
    except ImportError as e:
        return f"the 'tensorrt' Python package is not installed ({e})"
    except Exception as e:  # noqa: BLE001 - any failure of a broken install is a reason, not a crash
        return f"the 'tensorrt' Python package cannot be loaded ({type(e).__name__}: {e})"
    problem = tensorrt_version_problem(getattr(trt, "__version__", "unknown"))
    if problem:
        return problem
    try:
        cudart = import_cudart(import_module)
    except ImportError as e:
        return f"cuda-python is not installed ({e})"
    except Exception as e:  # noqa: BLE001
        return f"cuda-python cannot be loaded ({type(e).__name__}: {e})"
    try:
        err, count = cudart.cudaGetDeviceCount()
        ok = err == cudart.cudaError_t.cudaSuccess
    except Exception as e:  # noqa: BLE001 - e.g. no driver: the query itself fails
        return f"CUDA cannot be queried ({type(e).__name__}: {e})"
    if not ok or count < 1:
        return f"no CUDA device available ({err})"
    return None


def check_cuda(result, what: str, cudart=None):
    """A cuda-python call's result (error code, or (error code, value, ...)) -> its value(s); RuntimeError on error."""
    cudart = cudart or import_cudart()
    err = result[0] if isinstance(result, tuple) else result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    if isinstance(result, tuple):
        return result[1] if len(result) == 2 else result[1:]
    return None


class ThreadDevice:
    """Makes CUDA ``device`` current in each thread that calls :meth:`ensure`, once per thread.

    The CUDA runtime's current device is per thread: the node builds its backend in one thread and runs inference
    in its worker thread, where (without this) a device other than 0 would not be current and allocations and
    launches would go to the wrong GPU's context.
    """

    def __init__(self, cudart, device: int):
        self._cudart, self.device = cudart, int(device)
        self._local = threading.local()

    def ensure(self) -> None:
        if getattr(self._local, "current", False):
            return
        check_cuda(self._cudart.cudaSetDevice(self.device), "cudaSetDevice", self._cudart)
        self._local.current = True


def runtime_environment(device: int = 0) -> dict[str, str]:
    """What an engine is tied to: TensorRT version, GPU name and compute capability of ``device``."""
    import tensorrt as trt

    cudart = import_cudart()
    prop = check_cuda(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties", cudart)
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {
        "version": str(trt.__version__),
        "device_name": name.rstrip("\x00").strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
    }
