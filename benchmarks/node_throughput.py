"""Depth-node throughput over DDS: 640x192 frames at 30 Hz into the node running as its own process.

For each model (ORT fp32, ORT INT8, ...) it measures, over ``--duration`` seconds after a warm-up:
output rate, dropped frames (published - clouds received), latency p50/p99 from the image stamp to the
receipt of the point cloud in this process, CPU% of the node process (psutil, 100 % = one core), the bare
backend throughput (``create_backend(...).infer_disp`` in this process, before the node starts) and
- ``delivery_ratio`` = output rate / min(input rate, bare backend rate): the share of achievable frames the
  node delivers;
- ``capacity_ratio`` = bare inference time / node processing time (pair received -> cloud published, p50,
  from the node's /diagnostics): node throughput capacity over bare backend throughput; 1 - it = overhead;
- in the same run, every model's bare latency on every CPU backend, and the ratios: node vs bare, node vs the
  eager PyTorch loop (``--eager-bundle``), OpenVINO vs ONNX Runtime, INT8 vs fp32.

    python benchmarks/node_throughput.py --fp32 model.onnx --int8 model_int8.onnx
    python benchmarks/node_throughput.py --tiny-model   # a small generated ONNX model, no trained model needed
    python benchmarks/node_throughput.py --int8 model_int8.onnx --duration 600   # a 10-minute soak: RSS growth,
                                                                                   # drops and p99 per minute
    python benchmarks/node_throughput.py --fp32 model.onnx --eager-bundle model.safetensors  # + the eager row

``--eager-bundle`` (the bundle the ONNX files were exported from) adds the way a user would run Monodepth2
without this project, timed in this process on the same frames: its ``test_simple.py`` loop in eager PyTorch
(:func:`eager_pytorch`), and the ratios of the node to it.

Prints a table and writes benchmarks/results/node_throughput.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monodepth_ros import ros_env  # noqa: E402
from monodepth_ros.bundle import atomic_write_bytes  # noqa: E402


def make_frames(width: int, height: int, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` RGB frames (H, W, 3) uint8 and K (3, 3) from the synthetic world (random texture if absent)."""
    try:
        from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

        world = SyntheticWorld(SynthConfig(width=width, height=height))
        frames = [world.render(i) for i in range(n)]
        return [f.rgb for f in frames], frames[0].K
    except ImportError:
        from monodepth_ros.geometry import denormalize_intrinsics

        rng = np.random.default_rng(0)
        K = denormalize_intrinsics(np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1.0]]), width, height)
        return [rng.integers(0, 240, (height, width, 3), dtype=np.uint8) for _ in range(n)], K


def bare_backend(model: str, frames: list[np.ndarray], threads: int, n: int = 60, kind: str = "auto") -> dict:
    """Inference time of the backend alone on the same frames (ms per frame, p50)."""
    from monodepth_ros.backends import create_backend

    backend = create_backend(model, kind=kind, threads=threads or None)
    for f in frames[:5]:
        backend.infer_disp(f)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        backend.infer_disp(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    backend.close()
    ms = float(np.median(times) * 1e3)
    return {"bare_ms_p50": ms, "bare_hz": 1e3 / ms}


def eager_monodepth2(bundle: str, height: int, width: int, threads: int = 0):
    """Monodepth2's ``test_simple.py`` way, as a function rgb (H, W, 3) uint8 -> depth (H, W) float32, in eager
    PyTorch with the bundle's weights: resize to the network size (the node's resize, so both see the same
    pixels), a float tensor in [0, 1], the depth network under ``no_grad``, bilinear upsampling of the sigmoid
    output to the frame size, then depth = 1 / scaled disparity. Depth image only: no cloud, no messages."""
    import torch
    import torch.nn.functional as F
    from monodepth_training.bundle_io import load_bundle
    from monodepth_training.geometry import sigmoid_to_disp

    from monodepth_ros.backends.base import resize_rgb

    depth_net, _, meta = load_bundle(bundle)
    if threads:
        torch.set_num_threads(threads)

    def depth_of(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(resize_rgb(rgb, meta.height, meta.width)).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            sigma = F.interpolate(depth_net(x)[("disp", 0)], (height, width), mode="bilinear", align_corners=False)
            return (1.0 / sigmoid_to_disp(sigma, meta.min_depth, meta.max_depth))[0, 0].numpy()

    return depth_of


def eager_pytorch(bundle: str, frames: list[np.ndarray], threads: int, n: int = 60) -> dict:
    """:func:`eager_monodepth2` timed on ``frames``: ms per frame, p50."""
    depth_of = eager_monodepth2(bundle, *frames[0].shape[:2], threads)
    for f in frames[:5]:
        depth_of(f)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        depth_of(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    return {"eager_ms_p50": float(np.median(times) * 1e3)}


def backend_ratios(models: list[tuple[str, str]], frames: list[np.ndarray], threads: int) -> tuple[list, list]:
    """Bare latency of every model on every CPU backend here (ONNX Runtime, and OpenVINO when installed), on the
    run's frames, and the lines of :func:`inference.ratio_lines` (OpenVINO vs ONNX Runtime, INT8 vs fp32) for
    them: the runtime ratios side by side with the node's, in one run."""
    from inference import ratio_lines

    from monodepth_ros.backends import openvino_unavailable_reason, read_onnx_model_meta

    kinds = ["onnxruntime"] + (["openvino"] if openvino_unavailable_reason() is None else [])
    rows = []
    for _, path in models:
        meta = read_onnx_model_meta(path)
        for kind in kinds:
            ms = bare_backend(path, frames, threads, kind=kind)["bare_ms_p50"]
            rows.append({"model": Path(path).name, "backend": kind, "precision": meta.precision,
                         "resolution": f"{meta.width}x{meta.height}", "median_ms": ms})
    return rows, ratio_lines(rows)


def soak_stats(sent: list[int], arrivals: dict[int, float], t0_ns: int, rss: list[tuple[float, float]]) -> dict:
    """Per-minute drops and latency percentiles, and the node's memory growth, for a long run (a soak).

    ``sent``: image stamps (ns) published while measuring; ``arrivals``: stamp -> receipt time (s) of its cloud;
    ``rss``: (seconds since the start, MiB) samples of the node process. RSS growth is the last sample over the
    first (the warm-up before the first sample is excluded)."""
    minutes: dict[int, list[int]] = {}
    for s in sent:
        minutes.setdefault(int((s - t0_ns) // 60_000_000_000), []).append(s)
    per_minute = []
    for m in sorted(minutes):
        lat = np.array([(arrivals[s] - s * 1e-9) * 1e3 for s in minutes[m] if s in arrivals])
        per_minute.append({"minute": m, "sent": len(minutes[m]), "dropped": len(minutes[m]) - len(lat),
                           "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                           "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")})
    growth = 100.0 * (rss[-1][1] / rss[0][1] - 1.0) if len(rss) >= 2 else float("nan")
    return {"per_minute": per_minute, "rss_mib": [round(v, 1) for _, v in rss], "rss_growth_pct": growth}


def run_node(model: str, frames, K, args, domain: int) -> dict:
    """Start the node, stream frames at args.rate for args.duration s, collect clouds and diagnostics."""
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    env = ros_env.ros_env(domain)
    cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args",
           "--params-file", str(REPO / "config" / "depth_node.yaml"), "-r", "__ns:=/bench",
           "-p", f"model_path:={model}", "-p", f"threads:={args.threads}"]
    for item in args.node_param:  # e.g. decimation:=2 for large frames
        cmd += ["-p", item]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("node_throughput_bench", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        pub_img = node.create_publisher(Image, "/bench/image", qos_profile_sensor_data)
        pub_info = node.create_publisher(CameraInfo, "/bench/camera_info", qos_profile_sensor_data)
        arrivals: dict[int, float] = {}
        diags: list = []
        node.create_subscription(PointCloud2, "/bench/points",
                                 lambda m: arrivals.setdefault(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                                               time.time()),
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        end = time.monotonic() + 60
        while (pub_img.get_subscription_count() == 0 or pub_info.get_subscription_count() == 0):
            if proc.poll() is not None or time.monotonic() > end:
                log.seek(0)
                raise RuntimeError(f"node did not come up (rc={proc.poll()}):\n{log.read()[-3000:]}")
            ex.spin_once(timeout_sec=0.05)

        h, w = frames[0].shape[:2]
        msgs = []
        for rgb in frames:
            m = Image(height=h, width=w, encoding="rgb8", is_bigendian=False, step=w * 3)
            m.header.frame_id = "camera_optical_frame"
            m.data = rgb.tobytes()
            msgs.append(m)
        info = CameraInfo(height=h, width=w, distortion_model="plumb_bob", d=[0.0] * 5)
        info.header.frame_id = "camera_optical_frame"
        info.k = [float(v) for v in np.asarray(K).ravel()]
        info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0, 0, 1.0, 0]

        sent: list[int] = []
        stop = threading.Event()
        measuring = threading.Event()

        def publish_loop():
            period = 1.0 / args.rate
            t_next = time.monotonic()
            i = 0
            while not stop.is_set():
                ns = time.time_ns()
                msg = msgs[i % len(msgs)]
                msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
                info.header.stamp = msg.header.stamp
                pub_info.publish(info)
                pub_img.publish(msg)
                if measuring.is_set():
                    sent.append(ns)
                i += 1
                t_next += period
                time.sleep(max(0.0, t_next - time.monotonic()))

        ps = psutil.Process(proc.pid)
        pub_thread = threading.Thread(target=publish_loop, daemon=True)
        pub_thread.start()
        warm_end = time.monotonic() + args.warmup
        while time.monotonic() < warm_end:
            ex.spin_once(timeout_sec=0.01)
        ps.cpu_percent(None)
        measuring.set()
        t0 = time.monotonic()
        t0_ns = time.time_ns()
        rss: list[tuple[float, float]] = []  # (seconds since start, MiB): a long run is a soak
        while time.monotonic() - t0 < args.duration:
            ex.spin_once(timeout_sec=0.01)
            if proc.poll() is not None:
                raise RuntimeError(f"node exited during the run (rc={proc.returncode})")
            if not rss or time.monotonic() - t0 - rss[-1][0] >= 10.0:
                rss.append((time.monotonic() - t0, ps.memory_info().rss / 2**20))
        measuring.clear()
        elapsed = time.monotonic() - t0
        cpu = ps.cpu_percent(None)
        stop.set()
        pub_thread.join()
        t_drain = time.monotonic() + 1.0
        while time.monotonic() < t_drain:
            ex.spin_once(timeout_sec=0.01)
        lat_ms = np.array([(arrivals[s] - s * 1e-9) * 1e3 for s in sent if s in arrivals])
        received = len(lat_ms)
        diag = {}
        for arr in reversed(diags):
            if arr.status and arr.status[0].name.startswith("/bench/depth_node"):
                diag = {kv.key: kv.value for kv in arr.status[0].values}
                break
        return {
            **soak_stats(sent, arrivals, t0_ns, rss),
            "published": len(sent),
            "input_rate_hz": len(sent) / elapsed,
            "received": received,
            "output_rate_hz": received / elapsed,
            "dropped": len(sent) - received,
            "latency_p50_ms": float(np.percentile(lat_ms, 50)) if received else float("nan"),
            "latency_p99_ms": float(np.percentile(lat_ms, 99)) if received else float("nan"),
            "node_cpu_percent": cpu,
            "node_processing_p50_ms": float(diag.get("processing_p50_ms", "nan")),
            "node_dropped_latest_only": int(diag.get("dropped_latest_only", "0")),
            "backend": diag.get("backend", ""),
        }
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        os.unlink(log.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp32", help="fp32 ONNX model (run by the node's backend: auto unless --node-param backend:=...)")
    ap.add_argument("--int8", help="INT8 (QDQ) ONNX model")
    ap.add_argument("--tiny-model", action="store_true", help="also run a generated small ONNX model (no training)")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per model (>= 20 for the report)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--threads", type=int, default=0, help="inference threads (node and bare), 0 = ORT default")
    ap.add_argument("--domain", type=int, default=None)
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra depth node parameter (repeatable), e.g. decimation:=2")
    ap.add_argument("--eager-bundle", default=None, metavar="B.safetensors",
                    help="the models' source bundle: adds Monodepth2's test_simple.py loop in eager PyTorch")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "node_throughput.json"))
    args = ap.parse_args(argv)

    domain = ros_env.default_domain_id() if args.domain is None else args.domain
    ros_env.apply_ros_env(domain)
    ros_env.cleanup_stale_shm()
    models = [(name, path) for name, path in (("fp32", args.fp32), ("int8", args.int8)) if path]
    tmp = None
    if args.tiny_model or not models:
        sys.path.insert(0, str(REPO / "test"))
        from tiny_depth_model import make_tiny_depth_model

        tmp = tempfile.TemporaryDirectory()
        models.append(("tiny_fp32", str(make_tiny_depth_model(Path(tmp.name) / "tiny.onnx", args.height,
                                                              args.width, extra_convs=3))))
    frames, K = make_frames(args.width, args.height, 30)
    eager = None
    if args.eager_bundle:
        print("[eager] Monodepth2 test_simple.py loop in PyTorch ...", flush=True)
        eager = eager_pytorch(args.eager_bundle, frames, args.threads)
    rows = []
    for name, path in models:
        print(f"[{name}] bare backend ...", flush=True)
        # The machine may be shared: record its load so that numbers from a busy machine are recognisable.
        row = {"model": name, "path": str(path), "loadavg_1min_before": os.getloadavg()[0]}
        kind = next((p.split(":=", 1)[1] for p in args.node_param if p.startswith("backend:=")), "auto")
        row |= bare_backend(path, frames, args.threads, kind=kind)
        print(f"[{name}] node over DDS for {args.duration:.0f} s at {args.rate:.0f} Hz ...", flush=True)
        row |= run_node(path, frames, K, args, domain)
        achievable = min(row["input_rate_hz"], row["bare_hz"])
        row["delivery_ratio"] = row["output_rate_hz"] / achievable if achievable else float("nan")
        row["capacity_ratio"] = row["bare_ms_p50"] / row["node_processing_p50_ms"]
        if eager is not None:  # < 1: the node (cloud and messages included) is faster than the eager depth loop
            row |= eager | {"node_over_eager": row["node_processing_p50_ms"] / eager["eager_ms_p50"]}
        row["loadavg_1min_after"] = os.getloadavg()[0]
        rows.append(row)
    print("[bare] every model on every CPU backend ...", flush=True)
    bare_rows, ratios = backend_ratios(models, frames, args.threads)
    for r in rows:
        ratios.append(f"node vs bare ({r['backend']}), {r['model']}: processing {r['node_processing_p50_ms']:.1f} ms "
                      f"for {r['bare_ms_p50']:.1f} ms of inference, {1 / r['capacity_ratio']:.2f}x")
        if eager is not None:
            ratios.append(f"node vs eager PyTorch (test_simple.py), {r['model']}: {r['node_processing_p50_ms']:.1f} vs "
                          f"{r['eager_ms_p50']:.1f} ms, {r['node_over_eager']:.2f}x (the node also builds the cloud "
                          f"and the messages)")
    if tmp is not None:
        tmp.cleanup()

    cols = [("model", "{}"), ("backend", "{}"), ("input_rate_hz", "{:.1f}"), ("output_rate_hz", "{:.1f}"),
            ("dropped", "{}"),
            ("latency_p50_ms", "{:.1f}"), ("latency_p99_ms", "{:.1f}"), ("node_cpu_percent", "{:.0f}"),
            ("bare_ms_p50", "{:.1f}"), ("bare_hz", "{:.1f}"), ("node_processing_p50_ms", "{:.1f}"),
            ("delivery_ratio", "{:.2f}"), ("capacity_ratio", "{:.2f}")]
    if eager is not None:
        cols += [("eager_ms_p50", "{:.1f}"), ("node_over_eager", "{:.2f}")]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f.format(r[c]) for c, f in cols) + " |")
    for line in ratios:
        print(line)
    for r in rows:
        if len(r["per_minute"]) >= 2:  # a soak (--duration >= 120): stability over time
            p99 = [m["latency_p99_ms"] for m in r["per_minute"]]
            print(f"[{r['model']}] soak: RSS {r['rss_mib'][0]:.0f} -> {r['rss_mib'][-1]:.0f} MiB "
                  f"({r['rss_growth_pct']:+.1f} %), drops per minute {[m['dropped'] for m in r['per_minute']]}, "
                  f"p99 per minute {[round(v, 1) for v in p99]} ms")
    result = {
        "benchmark": "node_throughput",
        "frame_size": [args.width, args.height],
        "eager_bundle": args.eager_bundle,
        "rate_hz": args.rate,
        "duration_s": args.duration,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "note": "latency = image stamp -> PointCloud2 received by the benchmark process; CPU% 100 = one core; "
                "the benchmark subscribes to points only, so the node skips depth/colored (lazy)",
        "rows": rows,
        "bare_by_backend": bare_rows,
        "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
