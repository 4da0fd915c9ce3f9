"""Device check of the TensorRT path on a GPU robot, without torch, in under 5 minutes.

With the shipped models (``monodepth_ros/models/default.onnx`` and its INT8 Q/DQ twin ``default.int8.onnx``):

1. ONNX Runtime on the CPU, always (needs no TensorRT): outputs (disparity in the model's range, validity in
   [0, 1]) and latency p50/p99, the reference for the rest.
2. TensorRT, where it is usable: an FP16 engine from ``default.onnx`` and an INT8 engine from ``default.int8.onnx``
   (and, on TensorRT 10, one calibrated from ``default.onnx``), each compared with ONNX Runtime CPU (max |d disp|,
   mean relative d disp, max |d valid| and the share of pixels on the same side of 0.5) and timed; inference from a
   worker thread, as the node runs it; each rebuild reason forced (TensorRT version, GPU, ONNX change) and the engine
   seen rebuilt, with the INT8 calibration cache not reused for any of them; ``create_backend(kind="auto")``.

Every engine is built in a temporary folder (engine cache included); nothing is written beside the shipped models.

    python benchmarks/tensorrt_check.py [--iters 100] [--budget-s 270] [--out benchmarks/results/tensorrt_check.json]

Prints a table and writes the JSON report (``--out``). Exit codes: 0 every check passed; 1 a check failed;
2 bad arguments; 3 TensorRT is not usable here (the reason is printed and in the JSON; the ONNX Runtime part ran
and passed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("monodepth_ros") is None:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from monodepth_ros.backends import OnnxRuntimeBackend, create_backend, tensorrt_unavailable_reason  # noqa: E402
from monodepth_ros.backends.calibration import CalibrationBatches  # noqa: E402
from monodepth_ros.backends.model_meta import read_sidecar, write_sidecar  # noqa: E402
from monodepth_ros.bundle import atomic_write_bytes, file_sha256  # noqa: E402

MODELS = REPO / "monodepth_ros" / "models"
RESULTS = REPO / "benchmarks" / "results" / "tensorrt_check.json"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_TENSORRT = 0, 1, 2, 3
EXIT_MEANING = {EXIT_OK: "every check passed", EXIT_FAILED: "a check failed", EXIT_BAD_INPUT: "bad arguments",
                EXIT_NO_TENSORRT: "TensorRT is not usable here; the ONNX Runtime part ran and passed"}
# Pass limits against ONNX Runtime CPU (fp32 reference for FP16 and calibrated INT8, the same Q/DQ model for INT8).
LIMITS = {"fp16": {"mean_rel_disp": 0.02, "valid_agreement": 0.98},
          "int8": {"mean_rel_disp": 0.10, "valid_agreement": 0.95}}
log = logging.getLogger("tensorrt_check")


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (tested on the CPU)


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB uint8 street-like frames (sky gradient, road, boxes, noise): inputs with structure, no dataset."""
    rng = np.random.default_rng(seed)
    v = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    frames = []
    for _ in range(n):
        horizon = rng.uniform(0.35, 0.55)
        sky = np.array([120, 160, 220], np.float32) * (1.0 - 0.5 * v)
        road = np.array([90, 90, 95], np.float32) * (0.6 + 0.6 * v)
        img = np.where(v < horizon, sky, road) * np.ones((1, width, 1), np.float32)
        for _ in range(int(rng.integers(3, 8))):
            x0, w = int(rng.integers(0, width - 8)), int(rng.integers(6, max(7, width // 4)))
            y1 = int(rng.integers(int(horizon * height) + 2, height))
            h = int(rng.integers(4, max(5, y1)))
            img[max(0, y1 - h):y1, x0:x0 + w] = rng.uniform(30, 230, 3)
        img += rng.normal(0.0, 6.0, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def onnx_with_note(data: bytes, note: bytes = b"changed") -> bytes:
    """The serialised ONNX ``data`` with a doc_string (ModelProto field 6) appended: the same graph and metadata in
    another file with another sha256, made without the onnx package (a later field wins in protobuf)."""
    if len(note) > 127:
        raise ValueError("note must be shorter than 128 bytes (one-byte length)")
    return data + bytes([6 << 3 | 2, len(note)]) + note


def latency_ms(fn, iters: int, warmup: int = 5) -> dict[str, float]:
    """p50/p99/mean of ``fn()`` in milliseconds over ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
            "iters": int(t.size)}


def compare_outputs(ref: list[tuple], got: list[tuple]) -> dict[str, float | None]:
    """Differences between two backends' ``infer_outputs`` over the same frames: max |d disp|, mean relative
    d disp, and for the validity output (None without one) max |d valid| and the share on the same side of 0.5."""
    d_ref = np.stack([r[0] for r in ref]).astype(np.float64)
    d_got = np.stack([g[0] for g in got]).astype(np.float64)
    out = {"max_abs_disp": float(np.abs(d_got - d_ref).max()),
           "mean_rel_disp": float(np.mean(np.abs(d_got - d_ref) / np.maximum(np.abs(d_ref), 1e-6))),
           "max_abs_valid": None, "valid_agreement": None}
    if ref[0][1] is not None and got[0][1] is not None:
        v_ref, v_got = np.stack([r[1] for r in ref]), np.stack([g[1] for g in got])
        out["max_abs_valid"] = float(np.abs(v_got - v_ref).max())
        out["valid_agreement"] = float(np.mean((v_got >= 0.5) == (v_ref >= 0.5)))
    return out


def within(diff: dict, limits: dict) -> bool:
    """Whether ``diff`` (:func:`compare_outputs`) is inside ``limits`` (a missing validity output passes)."""
    ok = diff["mean_rel_disp"] <= limits["mean_rel_disp"]
    if diff["valid_agreement"] is not None:
        ok = ok and diff["valid_agreement"] >= limits["valid_agreement"]
    return ok


def exit_code(checks: list[dict], tensorrt_reason: str | None) -> int:
    """:data:`EXIT_FAILED` when any check failed, else :data:`EXIT_NO_TENSORRT` without TensorRT, else OK."""
    if any(c["status"] == "fail" for c in checks):
        return EXIT_FAILED
    return EXIT_NO_TENSORRT if tensorrt_reason else EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# The check


class Check:
    """Rows (per backend and model), checks (pass/fail/skip with a reason) and the time budget."""

    def __init__(self, budget_s: float):
        self.rows: list[dict] = []
        self.checks: list[dict] = []
        self.t0, self.budget_s = time.monotonic(), budget_s

    def add(self, name: str, ok: bool | None, detail: str) -> bool:
        status = "skip" if ok is None else ("pass" if ok else "fail")
        self.checks.append({"name": name, "status": status, "detail": detail})
        log.info("[%s] %s: %s", status, name, detail)
        return bool(ok)

    def over_budget(self, name: str) -> bool:
        spent = time.monotonic() - self.t0
        if spent > self.budget_s:
            self.add(name, None, f"not run: the time budget ({self.budget_s:.0f} s) is spent ({spent:.0f} s)")
            return True
        return False

    def guarded(self, name: str, fn) -> None:
        """Run ``fn()`` as one check; an exception is that check's failure, not the end of the run."""
        if self.over_budget(name):
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the report names it and the other checks still run
            self.add(name, False, f"{type(e).__name__}: {e}")


def _outputs(backend, frames) -> list[tuple]:
    return [backend.infer_outputs(f) for f in frames]


def _row(check: Check, backend: str, precision: str, model: str, lat: dict, diff: dict | None = None, **extra):
    check.rows.append({"backend": backend, "precision": precision, "model": model, **lat, **(diff or {}), **extra})


def run_onnxruntime(check: Check, models: dict[str, Path], frames, iters: int) -> dict[str, list[tuple]]:
    """ONNX Runtime CPU outputs and latency of each model (the reference); returns the outputs per model."""
    refs = {}
    for key, path in models.items():
        backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
        outs = _outputs(backend, frames)
        refs[key] = outs
        info = backend.info
        disp = np.stack([o[0] for o in outs])
        ok = bool(np.isfinite(disp).all() and disp.min() >= 0.5 / info.max_depth and disp.max() <= 2.0 / info.min_depth)
        detail = f"disp in [{disp.min():.4g}, {disp.max():.4g}]"
        if outs[0][1] is not None:
            valid = np.stack([o[1] for o in outs])
            ok = ok and bool(valid.min() >= -1e-6 and valid.max() <= 1.0 + 1e-6)  # float rounding of 1.0
            detail += f", valid in [{valid.min():.3g}, {valid.max():.3g}]"
        check.add(f"onnxruntime-cpu {path.name} outputs", ok, detail)
        lat = latency_ms(lambda b=backend: b.infer_outputs(frames[0]), iters)
        _row(check, "onnxruntime-cpu", backend.precision, path.name, lat)
    return refs


def run_tensorrt(check: Check, models: dict[str, Path], frames, refs, iters: int, work: Path) -> None:
    """The TensorRT checks (see the module docstring), in ``work``."""
    import tensorrt as trt

    from monodepth_ros.backends.tensorrt_backend import TensorRTBackend
    from monodepth_ros.backends.tensorrt_build import build_engine
    from monodepth_ros.backends.tensorrt_env import runtime_environment

    env = runtime_environment(0)
    major = int(trt.__version__.split(".")[0])
    cache = work / "cache"
    onnx = work / "default.onnx"
    shutil.copy(models["fp32"], onnx)
    qdq = work / "default.int8.onnx"
    shutil.copy(models["int8"], qdq)
    engines: dict[str, Path] = {}

    def engine_check(name, path, precision, ref_key, limits):
        backend = TensorRTBackend(path, precision=precision, engine_cache_dir=cache, logger=log)
        try:
            diff = compare_outputs(refs[ref_key], _outputs(backend, frames))
            lat = latency_ms(lambda: backend.infer_outputs(frames[0]), iters)
            side = read_sidecar(backend.path).tensorrt
            _row(check, "tensorrt", backend.precision, path.name, lat, diff, build_s=side.get("build_seconds"))
            engines[name] = backend.path
            check.add(f"tensorrt {name} vs onnxruntime-cpu", within(diff, limits),
                      f"{backend.path.name}: mean rel d disp {diff['mean_rel_disp']:.2e}, max |d disp| "
                      f"{diff['max_abs_disp']:.2e}, max |d valid| {diff['max_abs_valid']}, valid agreement "
                      f"{diff['valid_agreement']} (limits {limits}); p50 {lat['p50_ms']:.2f} ms")
            if name == "fp16":
                there = {}
                worker = threading.Thread(target=lambda: there.update(out=backend.infer_outputs(frames[0])))
                worker.start()
                worker.join()
                here = backend.infer_outputs(frames[0])
                d = float(np.abs(there["out"][0] - here[0]).max())
                check.add("tensorrt inference from a worker thread", d <= 1e-6,
                          f"built in the main thread, run in another: max |d disp| vs the main thread {d:.2e}")
        finally:
            backend.close()

    check.guarded("tensorrt fp16 vs onnxruntime-cpu", lambda: engine_check("fp16", onnx, "fp16", "fp32",
                                                                          LIMITS["fp16"]))
    check.guarded("tensorrt int8 (Q/DQ) vs onnxruntime-cpu", lambda: engine_check("int8 (Q/DQ)", qdq, None, "int8",
                                                                                 LIMITS["int8"]))

    if major >= 11:
        check.add("tensorrt int8 (calibrated)", None, f"TensorRT {trt.__version__} has no INT8 calibration")
    else:
        def calibrated():
            h, w = refs["fp32"][0][0].shape
            folder = work / "calibrated"
            folder.mkdir(exist_ok=True)
            calib = CalibrationBatches(synthetic_frames(16, h, w, seed=7), h, w)
            engine = build_engine(onnx, folder / "default.int8.engine", int8=True, calib=calib, logger=log)
            engine_check("int8 (calibrated)", engine, None, "fp32", LIMITS["int8"])
        check.guarded("tensorrt int8 (calibrated) vs onnxruntime-cpu", calibrated)

    def rebuild(reason_name: str, edit):
        engine = engines.get("fp16")
        if engine is None:
            check.add(f"rebuild on {reason_name}", None, "no fp16 engine to start from")
            return
        edit(engine)
        lines = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())
        log.addHandler(handler)
        try:
            backend = TensorRTBackend(onnx, precision="fp16", engine_cache_dir=cache, logger=log)
            rebuilt, side = backend.path, read_sidecar(backend.path).tensorrt
            backend.close()
        finally:
            log.removeHandler(handler)
        current = (side["version"] == env["version"] and side["device_name"] == env["device_name"]
                   and side["onnx_sha256"] == file_sha256(onnx))
        said = [ln for ln in lines if "building it from" in ln]
        check.add(f"rebuild on {reason_name}", current and bool(said),
                  f"{said[0] if said else 'no rebuild logged'}; now {rebuilt.name}")
        engines["fp16"] = rebuilt

    def forced(field, value):
        def edit(engine):
            meta = read_sidecar(engine)
            meta.tensorrt[field] = value
            write_sidecar(engine, meta)
        return edit

    check.guarded("rebuild on TensorRT version", lambda: rebuild("TensorRT version", forced("version", "9.0.0")))
    check.guarded("rebuild on GPU", lambda: rebuild("GPU", forced("device_name", "Some Other GPU")))
    check.guarded("rebuild on ONNX change",
                  lambda: rebuild("ONNX change", lambda e: onnx.write_bytes(onnx_with_note(onnx.read_bytes()))))

    if major >= 11:
        check.add("calibration cache not reused", None, f"TensorRT {trt.__version__} has no INT8 calibration")
    else:
        def calib_cache_not_reused():
            folder = work / "calibrated"
            engine = folder / "default.int8.engine"
            if not engine.is_file():
                check.add("calibration cache not reused", None, "no calibrated INT8 engine to start from")
                return
            src = Path(read_sidecar(engine).tensorrt["onnx_path"])
            build_engine(src, engine, int8=True, calib=None, logger=log)  # control: same everything -> reused
            changed = folder / "changed.onnx"
            changed.write_bytes(onnx_with_note(src.read_bytes(), b"retrained"))
            cases = {"TensorRT version": (src, {**env, "version": "9.0.0"}),
                     "GPU": (src, {**env, "device_name": "Some Other GPU"}),
                     "ONNX change": (changed, env)}
            for name, (model, fake_env) in cases.items():
                try:
                    build_engine(model, folder / f"{name.replace(' ', '_')}.int8.engine", int8=True, calib=None,
                                 env=fake_env, logger=log)
                except ValueError as e:
                    check.add(f"calibration cache not reused on {name}", "needs calibration frames" in str(e), str(e))
                else:
                    check.add(f"calibration cache not reused on {name}", False, "the old table was used")
        check.guarded("calibration cache not reused", calib_cache_not_reused)

    def timing():
        timing_files = sorted(p.name for p in cache.glob("timing.*.cache"))
        reused = [read_sidecar(p).tensorrt.get("timing_cache_reused") for p in cache.glob("*.engine")]
        check.add("timing cache named by TensorRT version and GPU", bool(timing_files) and any(reused),
                  f"{timing_files}; reused by {sum(bool(r) for r in reused)} of {len(reused)} builds")
    check.guarded("timing cache named by TensorRT version and GPU", timing)

    def auto():
        backend = create_backend(onnx, kind="auto", engine_cache_dir=cache, logger=log)
        try:
            check.add("create_backend(kind='auto')", backend.name == "tensorrt",
                      f"chose {backend.name} {getattr(backend, 'precision', '')}")
        finally:
            backend.close()
    check.guarded("create_backend(kind='auto')", auto)


def _versions() -> dict[str, str | None]:
    out = {}
    for d in ("onnxruntime", "numpy", "tensorrt", "cuda-python", "onnx"):
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    return out


def print_table(rows: list[dict], checks: list[dict]) -> None:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    header = (f"{'backend':<16} {'precision':<9} {'model':<22} {'p50 ms':>8} {'p99 ms':>8} {'max|d disp|':>11} "
              f"{'mean rel':>9} {'max|d valid|':>12} {'agree':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:<16} {r['precision']:<9} {r['model']:<22} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{fmt(r.get('max_abs_disp'), '.2e'):>11} {fmt(r.get('mean_rel_disp'), '.2e'):>9} "
              f"{fmt(r.get('max_abs_valid'), '.2e'):>12} {fmt(r.get('valid_agreement'), '.3f'):>6}")
    print()
    for c in checks:
        print(f"[{c['status']:>4}] {c['name']}: {c['detail']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="; ".join(f"exit {k}: {v}" for k, v in EXIT_MEANING.items()))
    p.add_argument("--models", type=Path, default=MODELS, help="folder with default.onnx and default.int8.onnx")
    p.add_argument("--iters", type=int, default=100, help="timed runs per backend (after 5 warm-up runs)")
    p.add_argument("--frames", type=int, default=4, help="synthetic frames compared per backend")
    p.add_argument("--budget-s", type=float, default=270.0, help="stop starting new checks after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON report")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = {"fp32": args.models / "default.onnx", "int8": args.models / "default.int8.onnx"}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing or args.iters < 1 or args.frames < 1:
        print(f"tensorrt_check: {'missing ' + ', '.join(missing) if missing else '--iters/--frames must be >= 1'}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    check = Check(args.budget_s)
    meta = OnnxRuntimeBackend(models["fp32"], providers=["CPUExecutionProvider"]).info
    frames = synthetic_frames(args.frames, meta.height, meta.width, seed=1)
    refs = run_onnxruntime(check, models, frames, args.iters)

    reason = tensorrt_unavailable_reason()
    trt_info: dict = {"available": reason is None, "reason": reason}
    if reason:
        print(f"TensorRT not available: {reason}. Only the ONNX Runtime CPU part ran.")
    else:
        from monodepth_ros.backends.tensorrt_env import runtime_environment

        trt_info.update(runtime_environment(0))
        with tempfile.TemporaryDirectory(prefix="tensorrt_check_") as tmp:
            try:
                run_tensorrt(check, models, frames, refs, args.iters, Path(tmp))
            except Exception as e:  # noqa: BLE001 - reported, and the JSON is still written
                check.add("tensorrt checks", False, f"stopped: {type(e).__name__}: {e}")

    code = exit_code(check.checks, reason)
    print()
    print_table(check.rows, check.checks)
    report = {
        "check": "tensorrt",
        "measured_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "what": "ONNX Runtime CPU reference; TensorRT FP16/INT8 engines of the shipped models vs it, latency of "
                "backend.infer_outputs(frame at model size) end to end, worker-thread inference, forced rebuilds, "
                "calibration-cache reuse, create_backend(kind='auto')",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()},
        "versions": _versions(),
        "tensorrt": trt_info,
        "limits": LIMITS,
        "seconds": round(time.monotonic() - check.t0, 1),
        "rows": check.rows,
        "checks": check.checks,
        "torch_imported": sys.modules.get("torch") is not None,
        "exit_code": code,
        "exit_meaning": EXIT_MEANING[code],
    }
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}; exit {code}: {EXIT_MEANING[code]}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
