"""Reports of a replay run: ``report.json`` (every number, written atomically), ``report.png`` (per-frame plots
drawn with matplotlib), ``panels.png`` (sample frames: image | prediction | GT | error, via
:func:`monodepth_ros.visualize.panel_grid`) and ``report.html`` (one page tying them together).

The report dict is built by :mod:`monodepth_ros.replay.run`; this module renders it. It also holds the small
timing helpers both modes use (latency percentiles, rates) and the progress bar.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.evaluation.metrics import METRIC_NAMES, format_table

__all__ = ["percentiles_ms", "rate_hz", "progress", "write_json", "scale_panel", "plot_per_frame", "write_html",
           "summary_text", "json_safe"]


def percentiles_ms(latencies_s: list[float] | np.ndarray) -> dict[str, float | int | None]:
    """Latency samples (N,) in seconds -> {"n", "mean", "p50", "p95", "p99", "max"} in milliseconds (None if N=0)."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    lat = lat[np.isfinite(lat)]
    if lat.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(lat * 1e3, [50, 95, 99])
    return {"n": int(lat.size), "mean": float(lat.mean() * 1e3), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(lat.max() * 1e3)}


def rate_hz(times_ns: list[int]) -> float | None:
    """Mean rate (Hz) of events at ``times_ns`` (N,), or None with fewer than two events or no time span."""
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


def progress(iterable, total: int, desc: str, quiet: bool):
    """A tqdm progress bar over ``iterable`` (frames), silent with ``quiet``."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", disable=quiet, dynamic_ncols=True)


def json_safe(obj):
    """Recursively replace NaN/inf floats by None and NumPy scalars/arrays by Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as strict JSON (NaN -> null), atomically; returns the path."""
    path = Path(path)
    text = json.dumps(json_safe(report), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
    return path


def scale_panel(report: dict) -> tuple[str, str | None] | None:
    """The scale-ratio panel of ``report.png`` as ``(title, note)``, following the report's
    ``settings.median_scaling``: None when median scaling is off (a metric/fixed-scale model, or
    ``--no-median-scaling``: there is no ratio, so the panel is left out); ``note`` None when there are ratios
    to plot, else the sentence shown instead (median scaling on, but no frame scored against GT)."""
    if not (report.get("settings") or {}).get("median_scaling"):
        return None
    title = "median-scaling ratio per frame (a steady ratio = a consistent scale)"
    ratios = [f.get("ratio") for f in report.get("per_frame", [])]
    if any(r is not None and math.isfinite(r) for r in ratios):
        return title, None
    return title, "median scaling on (relative scale), but no frame was scored against ground truth: no ratios"


def plot_per_frame(report: dict, path: str | os.PathLike) -> Path:
    """Per-frame figure (PNG, atomic): abs_rel and a1 per frame, the median-scaling ratio (only when median
    scaling is on, see :func:`scale_panel`), and latency per frame with dropped frames marked. The error panel
    says so when there is no ground truth."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on robots/CI; must precede pyplot
    import matplotlib.pyplot as plt

    frames = report.get("per_frame", [])
    t0 = frames[0]["stamp_ns"] if frames else 0
    t_s = np.array([(f["stamp_ns"] - t0) / 1e9 for f in frames])

    def col(key):
        return np.array([np.nan if f.get(key) is None else float(f[key]) for f in frames], dtype=np.float64)

    ratio_panel = scale_panel(report)
    n_axes = 3 if ratio_panel else 2
    fig, axes = plt.subplots(n_axes, 1, figsize=(10, 2.8 * n_axes + 0.1), sharex=True)
    title = (f"monodepth-replay ({report.get('mode', '?')}): {Path(str(report.get('bag', {}).get('path', ''))).name}"
             f" | model {report.get('model', {}).get('name', '?')}")
    fig.suptitle(title, fontsize=11)

    ax = axes[0]
    abs_rel, a1 = col("abs_rel"), col("a1")
    if np.isfinite(abs_rel).any():
        ax.plot(t_s, abs_rel, ".-", color="tab:red", label="abs_rel (lower is better)")
        ax.set_ylabel("abs_rel")
        ax2 = ax.twinx()
        ax2.plot(t_s, a1, ".-", color="tab:blue", label="a1 = δ<1.25 (higher is better)")
        ax2.set_ylabel("a1")
        ax2.set_ylim(0, 1.02)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ground truth scored", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("depth error per frame", fontsize=10)

    if ratio_panel:
        ax = axes[1]
        ax.set_title(ratio_panel[0], fontsize=10)
        if ratio_panel[1] is None:
            ax.plot(t_s, col("ratio"), ".-", color="tab:green")
            ax.set_ylabel("median(gt)/median(pred)")
        else:
            ax.text(0.5, 0.5, ratio_panel[1], ha="center", va="center", transform=ax.transAxes)

    ax = axes[-1]
    lat = col("latency_ms")
    dropped = np.array([bool(f.get("dropped")) for f in frames], dtype=bool)
    if np.isfinite(lat).any():
        ax.plot(t_s, lat, ".-", color="tab:purple", label=report.get("latency", {}).get("what", "latency"))
    if dropped.any():  # on the time axis (0 ms), where they do not hide the latencies
        ax.plot(t_s[dropped], np.zeros(int(dropped.sum())), "x", color="black",
                label=f"dropped: no output ({int(dropped.sum())})")
    if np.isfinite(lat).any() or dropped.any():
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("latency (ms)")
    ax.set_xlabel("time since first frame (s, from image stamps)")
    ax.set_title("latency per frame", fontsize=10)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summary_text(report: dict) -> str:
    """The console summary: the metric table (papers' layout), scale statistics, latency, rate and drops."""
    lines = []
    m = report.get("metrics")
    if m:
        lines.append(format_table(m))
        sc = report.get("scale", {})
        if report.get("settings", {}).get("median_scaling"):
            lines.append(f"median scaling: ratio mean {_fmt(sc.get('ratio_mean'))}, std {_fmt(sc.get('ratio_std'))}"
                         f" (std/median {_fmt(sc.get('ratio_std_rel'))})")
        else:
            lines.append("no median scaling (model scale policy is metric/fixed, or --no-median-scaling)")
    elif (report.get("settings") or {}).get("gt"):
        gt = report["settings"]["gt"]
        lines.append(f"no frame could be scored: no {gt['topic']} message matched an image stamp within "
                     f"{gt['tolerance_s']:g} s (try --gt-tolerance), or no GT pixel was valid")
    else:
        lines.append("no ground truth scored (no --gt-topic / --lidar-topic given)")
    gt = (report.get("settings") or {}).get("gt") or {}
    if gt.get("depth_convention"):  # lidar GT: say which depth it holds, the number moves by several percent
        lines.append(f"lidar GT depth: {gt['depth_convention']} (--lidar-depth; monodepth-eval's KITTI GT is "
                     f"lidar_forward)")
    fr = report.get("frames", {})
    lat = report.get("latency", {})
    rate = report.get("rate_hz", {})
    lines.append(f"frames: {fr.get('input')} in, {fr.get('with_depth')} with depth, {fr.get('with_points')} with "
                 f"points, {fr.get('scored')} scored; dropped {fr.get('dropped')} "
                 f"({_fmt(100.0 * (fr.get('drop_rate') or 0.0), 1)} %)")
    lines.append(f"latency ({lat.get('what', '?')}): p50 {_fmt(lat.get('p50'), 1)} ms, p95 {_fmt(lat.get('p95'), 1)}"
                 f" ms, p99 {_fmt(lat.get('p99'), 1)} ms")
    lines.append(f"rate: input {_fmt(rate.get('input'), 2)} Hz, achieved {_fmt(rate.get('achieved'), 2)} Hz")
    sky = report.get("sky") or {}
    if sky.get("gt_sky_pixels"):  # the GT marks sky (+inf): how much of it the node did not publish as a surface
        lines.append(f"sky (GT +inf): {_fmt(100.0 * sky['share_masked'], 1)} % of {sky['gt_sky_pixels']} pixels "
                     f"published as NaN (validity_threshold; the rest got a depth)")
    return "\n".join(lines)


def write_html(report: dict, path: str | os.PathLike) -> Path:
    """One self-contained page (images linked relative to it): summary table, plots, sample panels, settings."""
    path = Path(path)
    outs = report.get("outputs", {})

    def rel(key):
        p = outs.get(key)
        return html.escape(os.path.relpath(p, path.parent)) if p else None

    m = report.get("metrics") or {}
    head = "".join(f"<th>{n}</th>" for n in METRIC_NAMES)
    row = "".join(f"<td>{_fmt(m.get(n))}</td>" for n in METRIC_NAMES) if m else \
        f"<td colspan='{len(METRIC_NAMES)}'>no ground truth scored</td>"
    imgs = ""
    for key, caption in (("report_png", "per-frame metrics"), ("panels_png", "sample frames")):
        if rel(key):
            imgs += f"<h2>{caption}</h2><img src='{rel(key)}' style='max-width:100%'>\n"
    settings = html.escape(json.dumps(json_safe({k: report.get(k) for k in ("mode", "bag", "model", "settings",
                                                                            "frames", "latency", "rate_hz",
                                                                            "scale", "outputs")}), indent=2))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>monodepth-replay report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 10px;text-align:right}} pre{{background:#f4f4f4;padding:1em}}</style>
</head><body>
<h1>monodepth-replay report</h1>
<table><tr>{head}</tr><tr>{row}</tr></table>
<pre>{html.escape(summary_text(report))}</pre>
{imgs}
<h2>details</h2><pre>{settings}</pre>
</body></html>
"""
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
