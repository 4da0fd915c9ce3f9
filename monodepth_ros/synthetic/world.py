"""A deterministic procedural street and the vehicle that drives through it.

World frame ``world``: x along the street (east), y to the left (north), z up, metres; origin where the drive
starts. The street is straight along x: a road plane ``|y| < ROAD_HALF_W_M`` with lane markings, raised
sidewalks with kerbs, building blocks at varying setbacks on 16 m lots, trees, poles and parked cars. All solid
objects are axis-aligned boxes, which keeps ray casting analytic (slab test). The vehicle weaves gently
(a sum of two slow sinusoids in y, heading = path tangent, up to ~3 degrees) and pitches slightly.

Everything a frame shows is a pure function of ``(seed, index, camera)``: lots and traffic are generated from
seeds derived from their own indices, so any frame can be rendered alone (random access), in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from monodepth_ros.geometry import R_BODY_FROM_OPTICAL, validate_intrinsics

ROAD_HALF_W_M = 5.5
KERB_H_M = 0.15
LANE_Y_M = -1.75  # the ego lane: traffic drives on the right, y points left
ONCOMING_Y_M = 1.75
LOT_M = 16.0
T0_S = 1_317_000_000.0  # frame 0 stamp: 2011-09-26 01:20 UTC, a KITTI-era date for the written timestamps

# Material ids (per box, and for the analytic planes); the renderer maps each to a texture and a rule.
SKY, ROAD, SIDEWALK, KERB, BRICK, PLASTER, CAR_BODY, CAR_CABIN, POLE, TRUNK, LEAVES = range(11)

# Optical frame (x right, y down, z fwd) expressed in the vehicle frame (x fwd, y left, z up).
R_VEHICLE_FROM_OPTICAL = R_BODY_FROM_OPTICAL  # the vehicle frame is REP 103 (x forward, y left, z up)


@dataclass
class SynthConfig:
    """Synthetic world settings. Intrinsics are normalised (KITTI-like: fx ~ 0.58 W, fy ~ 1.92 H)."""

    width: int = 640
    height: int = 192
    fps: float = 10.0
    speed_mps: float = 10.0
    seed: int = 0
    static_segments: bool = False
    moving_objects: bool = False
    stereo_baseline_m: float = 0.54
    fx_norm: float = 0.58
    fy_norm: float = 1.92
    cx_norm: float = 0.5
    cy_norm: float = 0.5
    camera_height_m: float = 1.65
    draw_distance_m: float = 150.0

    def validate(self) -> SynthConfig:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0 < self.speed_mps <= 40:
            raise ValueError(f"speed_mps must be in (0, 40], got {self.speed_mps}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 0.3 <= self.camera_height_m <= 4.0:
            raise ValueError(f"camera_height_m must be in [0.3, 4], got {self.camera_height_m}")
        if min(self.fx_norm, self.fy_norm) <= 0:
            raise ValueError("focal lengths must be positive")
        if self.stereo_baseline_m <= 0:
            raise ValueError(f"stereo_baseline_m must be positive, got {self.stereo_baseline_m}")
        return self

    @property
    def K(self) -> np.ndarray:
        """Pixel intrinsics (3, 3)."""
        return validate_intrinsics(
            [
                [self.fx_norm * self.width, 0.0, self.cx_norm * self.width],
                [0.0, self.fy_norm * self.height, self.cy_norm * self.height],
                [0.0, 0.0, 1.0],
            ]
        )


@dataclass
class Frame:
    """One rendered frame with its exact ground truth.

    rgb (H, W, 3) uint8; depth_m (H, W) float32 = z in the optical frame (inf for sky); K (3, 3) pixel
    intrinsics; T_world_from_cam (4, 4); stamp_s (s since the Unix epoch); speed_mps (vehicle speed);
    moving_mask (H, W) bool (pixels on independently moving cars); index; camera "left" | "right".
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    T_world_from_cam: np.ndarray
    stamp_s: float
    speed_mps: float
    moving_mask: np.ndarray
    index: int
    camera: str = "left"


@dataclass
class Boxes:
    """Axis-aligned boxes (N) in world coordinates: lo/hi (N, 3), material (N,), tint (N, 3), moving (N,),
    windows (N, 4) = (column spacing, floor height, window width, window height) for facades."""

    lo: np.ndarray
    hi: np.ndarray
    material: np.ndarray
    tint: np.ndarray
    moving: np.ndarray
    windows: np.ndarray = field(default=None)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # SeedSequence needs non-negative entries; lot indices may be negative (behind the start).
    return np.random.default_rng([seed, *[k + (1 << 24) for k in keys]])


def _car(cx: float, cy: float, colour, moving: bool) -> list[tuple]:
    """A car as two boxes (body, cabin) centred at (cx, cy), pointing along x."""
    return [
        ((cx - 2.15, cy - 0.9, 0.22), (cx + 2.15, cy + 0.9, 1.0), CAR_BODY, colour, moving),
        ((cx - 1.25, cy - 0.8, 1.0), (cx + 0.85, cy + 0.8, 1.45), CAR_CABIN, colour, moving),
    ]


class StreetLayout:
    """Static content of the street, generated lot by lot (16 m along x, each side), cached."""

    BRICK_TINTS = ((0.78, 0.42, 0.32), (0.7, 0.5, 0.38), (0.85, 0.7, 0.55), (0.6, 0.35, 0.3), (0.75, 0.62, 0.5))
    PLASTER_TINTS = ((0.92, 0.88, 0.78), (0.8, 0.85, 0.9), (0.95, 0.85, 0.7), (0.75, 0.8, 0.72), (0.9, 0.78, 0.78))
    CAR_COLOURS = ((0.7, 0.1, 0.1), (0.15, 0.25, 0.6), (0.85, 0.85, 0.85), (0.2, 0.2, 0.22), (0.6, 0.6, 0.65),
                   (0.2, 0.45, 0.25), (0.85, 0.7, 0.2))  # fmt: skip

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: dict[tuple[int, int], list[tuple]] = {}

    def lot(self, side: int, index: int) -> list[tuple]:
        """Boxes of lot ``index`` on ``side`` (+1 left, -1 right) as (lo, hi, material, tint, moving, windows)."""
        key = (side, index)
        if key in self._cache:
            return self._cache[key]
        rng = _rng(self.seed, 1, side, index)
        x_lot = index * LOT_M
        boxes: list[tuple] = []
        none = (0.0, 0.0, 0.0, 0.0)
        if rng.random() > 0.08:  # most lots hold a building; a few gaps show the sky and the street beyond
            x0 = x_lot + rng.uniform(0.0, 2.5)
            x1 = min(x_lot + LOT_M, x0 + rng.uniform(9.0, 16.0))
            setback = rng.uniform(7.5, 12.5)
            height = rng.uniform(6.0, 22.0)
            brick = rng.random() < 0.5
            tints = self.BRICK_TINTS if brick else self.PLASTER_TINTS
            tint = np.array(tints[rng.integers(len(tints))]) * rng.uniform(0.9, 1.1)
            windows = (rng.uniform(2.2, 3.4), rng.uniform(2.8, 3.5), rng.uniform(1.0, 1.6), rng.uniform(1.2, 1.8))
            y_near, y_far = side * setback, side * (setback + 10.0)
            lo = (x0, min(y_near, y_far), 0.0)
            hi = (x1, max(y_near, y_far), height)
            boxes.append((lo, hi, BRICK if brick else PLASTER, tuple(tint), False, windows))
        item = rng.random()
        x_item = x_lot + rng.uniform(2.0, 14.0)
        y_item = side * (ROAD_HALF_W_M + 0.8)
        if item < 0.5:  # tree: trunk + canopy
            boxes.append(((x_item - 0.17, y_item - 0.17, 0.0), (x_item + 0.17, y_item + 0.17, 2.6), TRUNK,
                          (1.0, 1.0, 1.0), False, none))  # fmt: skip
            r = rng.uniform(1.0, 1.6)
            top = rng.uniform(4.5, 6.5)
            boxes.append(((x_item - r, y_item - r, 2.4), (x_item + r, y_item + r, top), LEAVES,
                          tuple(rng.uniform(0.85, 1.15, 3)), False, none))  # fmt: skip
        elif item < 0.85:  # street-light pole
            boxes.append(((x_item - 0.08, y_item - 0.08, 0.0), (x_item + 0.08, y_item + 0.08, 6.5), POLE,
                          (1.0, 1.0, 1.0), False, none))  # fmt: skip
        if rng.random() < 0.55:
            x_car = x_lot + rng.uniform(3.0, 13.0)
            colour = self.CAR_COLOURS[rng.integers(len(self.CAR_COLOURS))]
            for b in _car(x_car, side * (ROAD_HALF_W_M - 1.1), colour, False):
                boxes.append((*b, none))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = boxes
        return boxes


class Trajectory:
    """Vehicle motion: distance along x per frame, lateral weave, heading and pitch; exact and seeded.

    Speed per frame ``v_x(i)`` (m/s along x) varies slowly by +-8 %; with static segments, each 100-frame
    block has one stop (5-frame ramps down and up, 6-14 frames at rest). Positions integrate the speed with
    the trapezoid rule, so two frames at rest are exactly the same pose.
    """

    BLOCK = 100
    RAMP = 5

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        rng = _rng(cfg.seed, 2)
        self.weave = [(rng.uniform(0.5, 0.8), rng.uniform(110, 170), rng.uniform(0, 2 * np.pi)),
                      (rng.uniform(0.2, 0.4), rng.uniform(45, 70), rng.uniform(0, 2 * np.pi))]  # fmt: skip
        self.pitch = [(np.deg2rad(0.35), rng.uniform(20, 35), rng.uniform(0, 2 * np.pi)),
                      (np.deg2rad(0.15), rng.uniform(6, 10), rng.uniform(0, 2 * np.pi))]  # fmt: skip
        self.speed_phase = rng.uniform(0, 2 * np.pi)
        self._x = np.zeros(1)

    def speed_x(self, idx: np.ndarray) -> np.ndarray:
        """Speed along x (m/s) at frames ``idx`` (N,)."""
        idx = np.asarray(idx, dtype=np.int64)
        v = self.cfg.speed_mps * (1.0 + 0.08 * np.sin(2 * np.pi * idx / 230.0 + self.speed_phase))
        if self.cfg.static_segments:
            block = idx // self.BLOCK
            blocks = np.unique(block)
            params = np.array([self._stop(int(b)) for b in blocks], np.float64).reshape(-1, 2)
            start, stop_len = (params[np.searchsorted(blocks, block), k] for k in range(2))
            i = idx.astype(np.float64)
            down = np.clip((start - i) / self.RAMP, 0, 1)  # 1 before the ramp, 0 from ``start``
            up = np.clip((i - (start + stop_len - 1)) / self.RAMP, 0, 1)
            factor = np.maximum(down, up)
            v = v * factor
        return v

    def _stop(self, block: int) -> tuple[int, int]:
        """First stopped frame and stop length (frames) of 100-frame block ``block``."""
        r = _rng(self.cfg.seed, 3, block)
        return block * self.BLOCK + int(r.integers(25, 60)), int(r.integers(6, 15))

    def x_at(self, index: int) -> float:
        """Distance along x (m) of frame ``index``: cumulative trapezoid of the speed, cached and extended."""
        if index < 0:
            raise ValueError(f"frame index must be non-negative, got {index}")
        if index >= len(self._x):
            n = max(index + 1, 2 * len(self._x))
            v = self.speed_x(np.arange(n))
            dt = 1.0 / self.cfg.fps
            self._x = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * dt)])
        return float(self._x[index])

    def lateral(self, x: float) -> tuple[float, float]:
        """Lateral position y (m) and its slope dy/dx at distance ``x``."""
        y = LANE_Y_M + sum(a * math.sin(2 * math.pi * x / lam + ph) for a, lam, ph in self.weave)
        dy = sum(a * 2 * math.pi / lam * math.cos(2 * math.pi * x / lam + ph) for a, lam, ph in self.weave)
        return y, dy

    def pitch_at(self, x: float) -> float:
        return sum(a * math.sin(2 * math.pi * x / lam + ph) for a, lam, ph in self.pitch)

    def T_world_from_vehicle(self, index: int) -> np.ndarray:
        """Vehicle pose (4, 4): frame on the ground under the camera, x forward, y left, z up."""
        x = self.x_at(index)
        y, slope = self.lateral(x)
        yaw, pitch = math.atan(slope), self.pitch_at(x)
        cz, sz, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        Rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
        Ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        T = np.eye(4)
        T[:3, :3] = Rz @ Ry
        T[:3, 3] = (x, y, 0.0)
        return T

    def speed_mps(self, index: int) -> float:
        """Vehicle speed (m/s) along its path at frame ``index``: v_x / cos(heading)."""
        _, slope = self.lateral(self.x_at(index))
        return float(self.speed_x(np.array([index]))[0] * math.sqrt(1.0 + slope * slope))


class SyntheticWorld:
    """Random-access renderer of a seeded drive: ``render(index, camera="left"|"right") -> Frame``."""

    def __init__(self, cfg: SynthConfig | None = None):
        self.cfg = (cfg or SynthConfig()).validate()
        self.K = self.cfg.K
        self.layout = StreetLayout(self.cfg.seed)
        self.trajectory = Trajectory(self.cfg)
        from monodepth_ros.synthetic.textures import make_textures

        self.textures = make_textures(self.cfg.seed)
        T_vehicle_from_cam = np.eye(4)
        T_vehicle_from_cam[:3, :3] = R_VEHICLE_FROM_OPTICAL
        T_vehicle_from_cam[2, 3] = self.cfg.camera_height_m
        self.T_vehicle_from_cam = T_vehicle_from_cam
        self.T_left_from_right = np.eye(4)
        self.T_left_from_right[0, 3] = self.cfg.stereo_baseline_m

    # ------------------------------------------------------------------------------------------------- poses

    def stamp_s(self, index: int) -> float:
        return T0_S + index / self.cfg.fps

    def T_world_from_cam(self, index: int, camera: str = "left") -> np.ndarray:
        """Exact camera pose (4, 4) of frame ``index``; the right camera sits +baseline along optical x."""
        T = self.trajectory.T_world_from_vehicle(index) @ self.T_vehicle_from_cam
        if camera == "right":
            return T @ self.T_left_from_right
        if camera != "left":
            raise ValueError(f"camera must be 'left' or 'right', got {camera!r}")
        return T

    # ------------------------------------------------------------------------------------------------- scene

    def boxes_near(self, index: int, x_min: float, x_max: float) -> Boxes:
        """All boxes (static lots + traffic at frame ``index``'s time) overlapping x in [x_min, x_max]."""
        rows: list[tuple] = []
        for lot in range(math.floor(x_min / LOT_M) - 1, math.floor(x_max / LOT_M) + 1):
            for side in (-1, 1):
                rows.extend(self.layout.lot(side, lot))
        if self.cfg.moving_objects:
            rows.extend(self._traffic(index, x_min, x_max))
        rows = [r for r in rows if r[1][0] >= x_min and r[0][0] <= x_max]
        none = np.zeros((0, 3))
        if not rows:
            return Boxes(none, none, np.zeros(0, np.int64), none, np.zeros(0, bool), np.zeros((0, 4)))
        return Boxes(
            lo=np.array([r[0] for r in rows], np.float64),
            hi=np.array([r[1] for r in rows], np.float64),
            material=np.array([r[2] for r in rows], np.int64),
            tint=np.array([r[3] for r in rows], np.float64),
            moving=np.array([r[4] for r in rows], bool),
            windows=np.array([r[5] for r in rows], np.float64),
        )

    ONCOMING_SPACING_M = 32.0
    ONCOMING_SPEED_MPS = 8.0
    LEADER_GAP_M = 15.0

    def _traffic(self, index: int, x_min: float, x_max: float) -> list[tuple]:
        """Independently moving cars: an oncoming stream, and a leader that keeps the ego speed and lane."""
        t = index / self.cfg.fps
        none = (0.0, 0.0, 0.0, 0.0)
        rows = []
        shift = self.ONCOMING_SPEED_MPS * t
        k0 = math.floor((x_min - 8.0 + shift) / self.ONCOMING_SPACING_M)
        k1 = math.ceil((x_max + 8.0 + shift) / self.ONCOMING_SPACING_M)
        for k in range(k0, k1 + 1):
            r = _rng(self.cfg.seed, 4, k)
            if r.random() < 0.3:
                continue
            x = k * self.ONCOMING_SPACING_M + r.uniform(-6.0, 6.0) - shift
            colour = StreetLayout.CAR_COLOURS[r.integers(len(StreetLayout.CAR_COLOURS))]
            rows.extend((*b, none) for b in _car(x, ONCOMING_Y_M, colour, True))
        # Same speed as the camera: zero image motion, the classic "infinite depth hole" for monocular training.
        x_lead = self.trajectory.x_at(index) + self.LEADER_GAP_M
        rows.extend((*b, none) for b in _car(x_lead, LANE_Y_M, (0.85, 0.85, 0.8), True))
        return rows

    # ------------------------------------------------------------------------------------------------ render

    def render(self, index: int, camera: str = "left") -> Frame:
        """Render frame ``index`` from the left (default) or right stereo camera, with its exact ground truth."""
        if not isinstance(index, int | np.integer) or index < 0:
            raise ValueError(f"frame index must be a non-negative integer, got {index!r}")
        index = int(index)
        from monodepth_ros.synthetic.render import render_view

        T = self.T_world_from_cam(index, camera)
        x_cam = T[0, 3]
        boxes = self.boxes_near(index, x_cam - 12.0, x_cam + self.cfg.draw_distance_m)
        rgb, depth_m, moving = render_view(T, self.K, self.cfg.width, self.cfg.height, boxes=boxes, tex=self.textures)
        return Frame(
            rgb=rgb,
            depth_m=depth_m,
            K=self.K.copy(),
            T_world_from_cam=T,
            stamp_s=self.stamp_s(index),
            speed_mps=self.trajectory.speed_mps(index),
            moving_mask=moving,
            index=index,
            camera=camera,
        )
