"""Vectorised NumPy ray caster for the synthetic street: exact depth, textured Lambertian colour.

Why hand-written: no headless renderer installs here, and the scene is simple enough (three analytic planes
plus axis-aligned boxes) that closed-form intersections give EXACT depth, which a rasteriser's depth buffer
would only approximate. Speed comes from two things:
- rays have z = 1 in the optical frame, so the ray parameter of a hit is its depth, with no conversion;
- each box is only tested against the pixels inside its projected screen rectangle (the box clipped to the
  near plane, then projected), so the work scales with the boxes' screen area instead of pixels x boxes.
Arithmetic is float32 in coordinates relative to the camera (x, y), so long drives keep millimetre precision.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from monodepth_ros.synthetic import world as w

NEAR_M = 0.05
# Fixed sun (world frame, from the south-east, 50 degrees up): shading never depends on the viewpoint.
SUN_DIR = np.array([0.45, -0.45, 0.77]) / np.linalg.norm([0.45, -0.45, 0.77])
AMBIENT, DIFFUSE = 0.5, 0.7
TEX_PERIOD_M = 64.0  # every plane texture and marking period divides this, so x can be reduced modulo it

# Corner c of a box has x from bit 0, y from bit 1, z from bit 2; an edge joins corners one bit apart.
_CORNER_BITS = np.array([[(c >> k) & 1 for k in range(3)] for c in range(8)], bool)
_EDGES = np.array([(a, a | (1 << k)) for k in range(3) for a in range(8) if not a & (1 << k)])


@lru_cache(maxsize=8)
def _camera_rays(width: int, height: int, *, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Optical-frame ray directions (3, H, W) float32 with z = 1."""
    u = (np.arange(width, dtype=np.float64) - cx) / fx
    v = (np.arange(height, dtype=np.float64) - cy) / fy
    rays = np.empty((3, height, width), np.float32)
    rays[0] = u[None, :]
    rays[1] = v[:, None]
    rays[2] = 1.0
    rays.setflags(write=False)
    return rays


def box_screen_rects(lo, hi, R_wc, o, K, *, width, height):
    """Conservative pixel rectangles of boxes: lo/hi (N, 3) camera-relative world coords, camera rotation
    R_wc (3, 3) and origin o (3,). Returns (N, 4) int [u0, u1, v0, v1) and a visibility flag (N,)."""
    n = lo.shape[0]
    corners = np.where(_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])  # (N, 8, 3)
    cam = (corners - o) @ R_wc  # p_cam = R^T (p - o), as row vectors
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # (N, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - NEAR_M) * (zb - NEAR_M) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crosses, (NEAR_M - za) / (zb - za), 0.0)
    clipped = a + s[..., None] * (b - a)
    pts = np.concatenate([cam, clipped], axis=1)  # (N, 20, 3)
    ok = np.concatenate([cam[..., 2] >= NEAR_M, crosses], axis=1)
    z = np.where(ok, pts[..., 2], 1.0)
    u = K[0, 0] * pts[..., 0] / z + K[0, 2]
    v = K[1, 1] * pts[..., 1] / z + K[1, 2]
    umin = np.where(ok, u, np.inf).min(1)
    umax = np.where(ok, u, -np.inf).max(1)
    vmin = np.where(ok, v, np.inf).min(1)
    vmax = np.where(ok, v, -np.inf).max(1)
    visible = ok.any(1) & (umax >= -0.5) & (umin <= width - 0.5) & (vmax >= -0.5) & (vmin <= height - 0.5)
    rects = np.zeros((n, 4), np.int64)
    with np.errstate(invalid="ignore"):
        rects[:, 0] = np.clip(np.floor(np.nan_to_num(umin, nan=0.0)), 0, width)
        rects[:, 1] = np.clip(np.ceil(np.nan_to_num(umax, nan=0.0)) + 1, 0, width)
        rects[:, 2] = np.clip(np.floor(np.nan_to_num(vmin, nan=0.0)), 0, height)
        rects[:, 3] = np.clip(np.ceil(np.nan_to_num(vmax, nan=0.0)) + 1, 0, height)
    return rects, visible & (rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2])


def cast(T_world_from_cam, K, width, height, boxes: w.Boxes):
    """Ray-cast one view. Returns depth (H, W) float32 (inf = sky), primitive id (H, W) int32 (box index,
    or -1 sky, -2 road, -3 sidewalk, -4 kerb), ray directions (3, H, W) float32 in the camera-relative world
    frame, the relative origin o (3,) and the (x, y) offset that was subtracted from world coordinates."""
    T = np.asarray(T_world_from_cam, np.float64)
    R = T[:3, :3]
    offset = np.array([T[0, 3], T[1, 3], 0.0])
    o = (T[:3, 3] - offset).astype(np.float32)
    rays = _camera_rays(width, height, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]))
    # World directions d = R @ ray; the rays are separable (x by column, y by row), so each component is a
    # broadcast sum of a row and a column vector rather than a full matrix product over pixels.
    ray_x, ray_y = rays[0, 0, :], rays[1, :, 0]
    Rf = R.astype(np.float32)
    d = np.empty_like(rays)
    for k in range(3):
        np.add(Rf[k, 0] * ray_x[None, :], Rf[k, 1] * ray_y[:, None] + Rf[k, 2], out=d[k])
    with np.errstate(divide="ignore"):
        inv = 1.0 / d
    dx, dy, dz = d
    oz = o[2]

    depth = np.full((height, width), np.inf, np.float32)
    prim = np.full((height, width), -1, np.int32)
    y_left, y_right = w.ROAD_HALF_W_M - offset[1], -w.ROAD_HALF_W_M - offset[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        down = dz < 0
        t_g = np.where(down, -oz * inv[2], np.inf)
        y_g = t_g * dy
        road = down & (y_g < y_left) & (y_g > y_right)
        t_s = np.where(down, (w.KERB_H_M - oz) * inv[2], np.inf)
        y_s = t_s * dy
        side = down & ((y_s >= y_left) | (y_s <= y_right))
        t_k = np.where(dy > 0, y_left * inv[1], np.where(dy < 0, y_right * inv[1], np.inf))
        z_k = oz + t_k * dz
        kerb = (t_k > 0) & (z_k >= 0) & (z_k <= w.KERB_H_M)
    for t_p, valid, pid in ((t_g, road, -2), (t_s, side, -3), (t_k, kerb, -4)):
        upd = valid & (t_p < depth)
        np.copyto(depth, t_p, where=upd)
        np.copyto(prim, np.int32(pid), where=upd)

    n = boxes.lo.shape[0]
    if n:
        lo = (boxes.lo - offset).astype(np.float32)
        hi = (boxes.hi - offset).astype(np.float32)
        rects, visible = box_screen_rects(lo.astype(np.float64), hi.astype(np.float64), R, o.astype(np.float64),
                                          K, width=width, height=height)  # fmt: skip
        lo_o, hi_o = lo - o, hi - o
        for i in np.flatnonzero(visible):
            u0, u1, v0, v1 = rects[i]
            ix, iy, iz = inv[0, v0:v1, u0:u1], inv[1, v0:v1, u0:u1], inv[2, v0:v1, u0:u1]
            with np.errstate(invalid="ignore"):
                ax, bx = lo_o[i, 0] * ix, hi_o[i, 0] * ix
                ay, by = lo_o[i, 1] * iy, hi_o[i, 1] * iy
                az, bz = lo_o[i, 2] * iz, hi_o[i, 2] * iz
                t_near = np.maximum(np.maximum(np.minimum(ax, bx), np.minimum(ay, by)), np.minimum(az, bz))
                t_far = np.minimum(np.minimum(np.maximum(ax, bx), np.maximum(ay, by)), np.maximum(az, bz))
                sub = depth[v0:v1, u0:u1]
                hit = (t_near <= t_far) & (t_near > NEAR_M) & (t_near < sub)
            np.copyto(sub, t_near, where=hit)
            np.copyto(prim[v0:v1, u0:u1], np.int32(i), where=hit)
    return depth, prim, d, o, offset


def _sky(dx, dy, dz, fx: float, tex) -> np.ndarray:
    """Sky colour (N, 3) from world ray directions (N,) each: it lies at infinity, so it moves with rotation
    and never with translation."""
    el = np.clip(dz / np.sqrt(dx * dx + dy * dy + dz * dz), -1.0, 1.0)
    az = np.arctan2(dy, dx)
    g = np.sqrt(np.clip(el, 0.0, 1.0))[:, None]
    base = (1 - g) * np.array([0.78, 0.84, 0.92], np.float32) + g * np.array([0.32, 0.52, 0.85], np.float32)
    reps = np.float32(6.0 / (2 * np.pi))
    fp = np.full(dx.shape[0], reps / fx, np.float32)
    c = tex["clouds"].sample_grey(az * reps, el * np.float32(6.0), fp)
    c = (np.clip((c - 0.45) * 2.5, 0.0, 1.0) * np.clip(el * 8, 0, 1))[:, None]
    return base * (1 - 0.7 * c) + 0.7 * c * np.array([0.97, 0.97, 0.97], np.float32)


def _fmod(x: np.ndarray, period) -> np.ndarray:
    """x mod period (>= 0) for float arrays; np.mod on floats is ~20x slower (exact divmod semantics we don't need)."""
    return x - np.floor(x / period) * period


def _lambert(axis: int, sign: float) -> float:
    """Diffuse shading of a face whose normal is ``sign`` times world axis ``axis`` (fixed sun)."""
    return float(AMBIENT + DIFFUSE * max(sign * SUN_DIR[axis], 0.0))


# Shade of box faces indexed by axis * 2 + (normal points along +axis).
_FACE_SHADE = np.array([_lambert(a, s) for a in range(3) for s in (-1.0, 1.0)], np.float32)


def shade(depth, prim, d, o, offset, *, K, boxes: w.Boxes, tex) -> np.ndarray:
    """Colour (H, W, 3) uint8 from the cast: texture by material in street or box-local coordinates,
    Lambertian shading with the fixed sun. Works per material on gathered 1-D float32 arrays."""
    H, W = depth.shape
    fx = np.float32(K[0, 0])
    out = np.empty((H * W, 3), np.float32)
    pflat = prim.ravel()
    tflat = depth.ravel()
    dxf, dyf, dzf = (d[k].ravel() for k in range(3))
    # Plane ids -4..-1 and box ids 0..N-1 share one lookup table (shifted by 4).
    lut = np.concatenate([[w.KERB, w.SIDEWALK, w.ROAD, w.SKY], boxes.material]).astype(np.int8)
    mat = lut[pflat + 4]
    x_off = np.float32(offset[0] % TEX_PERIOD_M)
    y_off = np.float32(offset[1])
    oz = np.float32(o[2])
    lo_all = (boxes.lo - offset).astype(np.float32)
    ext_all = (boxes.hi - boxes.lo).astype(np.float32)
    tint_all = boxes.tint.astype(np.float32)
    for m in range(w.LEAVES + 1):
        sel = np.flatnonzero(mat == m)
        if not sel.size:
            continue
        dx, dy, dz = dxf[sel], dyf[sel], dzf[sel]
        if m == w.SKY:
            out[sel] = _sky(dx, dy, dz, float(fx), tex)
            continue
        t = tflat[sel]
        inv_len = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
        if m in (w.ROAD, w.SIDEWALK, w.KERB):
            xs = t * dx + x_off
            ys = t * dy + y_off
            if m == w.KERB:
                cos = np.abs(dy) * inv_len
                col = tex["kerb"].sample(xs, oz + t * dz, t / fx / np.sqrt(np.maximum(cos, 0.02)))
                # Kerb faces look towards the road centre: normal -sign(y).
                col *= np.where(ys > 0, _lambert(1, -1.0), _lambert(1, 1.0)).astype(np.float32)[:, None]
            else:
                cos = np.abs(dz) * inv_len
                fp = t / fx / np.sqrt(np.maximum(cos, 0.02))
                col = tex["asphalt" if m == w.ROAD else "sidewalk"].sample(xs, ys, fp)
                if m == w.ROAD:
                    xm = _fmod(xs, np.float32(8.0))
                    ay = np.abs(ys)
                    paint = ((ay < 0.08) & (xm < 3.0)) | (np.abs(ay - (w.ROAD_HALF_W_M - 0.35)) < 0.08)
                    col = np.where(paint[:, None], 0.55 + 1.2 * col, col)
                col *= np.float32(_lambert(2, 1.0))
            out[sel] = col
            continue
        b = pflat[sel]
        lo, ext = lo_all[b], ext_all[b]
        lx = t * dx - lo[:, 0]
        ly = t * dy - lo[:, 1]
        lz = oz + t * dz - lo[:, 2]
        fx_, fy_, fz_ = (np.minimum(lc, ext[:, k] - lc) for k, lc in enumerate((lx, ly, lz)))
        a0 = (fx_ <= fy_) & (fx_ <= fz_)
        a2 = ~a0 & (fz_ < fy_)
        a1 = ~a0 & ~a2
        axis = np.where(a0, 0, np.where(a2, 2, 1))
        upper = np.where(a0, lx > 0.5 * ext[:, 0], np.where(a2, lz > 0.5 * ext[:, 2], ly > 0.5 * ext[:, 1]))
        s_c = np.where(a0, ly, lx)
        t_c = np.where(a2, ly, lz)
        cos = np.abs(np.where(a0, dx, np.where(a2, dz, dy))) * inv_len
        fp = t / fx / np.sqrt(np.maximum(cos, 0.02))
        tint = tint_all[b]
        if m in (w.BRICK, w.PLASTER):
            col = tex["brick" if m == w.BRICK else "plaster"].sample(s_c, t_c, fp) * tint
            win = boxes.windows[b].astype(np.float32)
            col = _windows(col, s_c, t_c, a1, win, length_m=ext[:, 0], height_m=ext[:, 2], fp=fp, tex=tex)
        elif m == w.CAR_BODY:
            col = tex["paint"].sample(s_c, t_c, fp) * tint
            col = np.where(((axis != 2) & (t_c < 0.18))[:, None], col * 0.25, col)
        elif m == w.CAR_CABIN:
            paint = tex["paint"].sample(s_c, t_c, fp) * tint
            col = np.where(a2[:, None], paint, tex["glass"].sample(s_c, t_c, fp))
        elif m == w.POLE:
            col = tex["metal"].sample(s_c, t_c, fp)
        elif m == w.TRUNK:
            col = tex["bark"].sample(s_c, t_c, fp)
        else:
            col = tex["leaves"].sample(s_c, t_c, fp) * tint
        out[sel] = col * _FACE_SHADE[axis * 2 + upper][:, None]
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8).reshape(H, W, 3)


def _windows(col, s_m, z_m, facade, params, *, length_m, height_m, fp, tex):
    """Overlay a grid of framed windows on the street-facing (and back) facades: per-building spacing.
    params (N, 4) = column spacing, floor height, window width, window height (m)."""
    col_sp, floor_h, win_w, win_h = params.T
    a = s_m - 0.8
    zz = z_m - 1.1
    inside = facade & (a > -0.12) & (s_m < length_m - 0.68) & (zz > -0.12) & (z_m < height_m - 1.08)
    if not inside.any():
        return col
    ma = _fmod(a + np.float32(0.12), col_sp)
    mz = _fmod(zz + np.float32(0.12), floor_h)
    frame = inside & (ma < win_w + 0.24) & (mz < win_h + 0.24)
    glass = frame & (ma >= 0.12) & (ma < win_w + 0.12) & (mz >= 0.12) & (mz < win_h + 0.12)
    glass &= (a > 0) & (s_m < length_m - 0.8) & (zz > 0) & (z_m < height_m - 1.2)
    col = np.where((frame & ~glass)[:, None], np.float32(0.85), col)
    if glass.any():
        g = np.flatnonzero(glass)
        col[g] = tex["glass"].sample(s_m[g], z_m[g], fp[g])
    return col


def render_view(T_world_from_cam, K, width, height, *, boxes: w.Boxes, tex):
    """Ray-cast and shade one view: rgb (H, W, 3) uint8, depth_m (H, W) float32 (inf = sky),
    moving_mask (H, W) bool."""
    depth, prim, d, o, offset = cast(T_world_from_cam, K, width, height, boxes)
    rgb = shade(depth, prim, d, o, offset, K=K, boxes=boxes, tex=tex)
    if boxes.lo.shape[0]:
        moving = (prim >= 0) & boxes.moving[np.maximum(prim, 0)]
    else:
        moving = np.zeros(prim.shape, bool)
    return rgb, depth, moving
