"""Drawing one pedestrian with numpy masks (no per-pixel Python loops, no external assets).

Every body part is a boolean mask computed by broadcasting a row vector of horizontal body
coordinates ``u`` (1, W) against a column vector of vertical ones ``v`` (H, 1); painting is
``labels[mask] = part``, and one look-up turns the label map into colours. Body coordinates are in
units of the body height: ``v = 0`` at the top of the head, ``v = 1`` at the soles, ``u = 0`` on the body's centre line.

The viewpoint decides what is visible (Basics and EnsembleNet chapters): a logo only from
the front; a backpack as a block from the back, as straps from the front, as a bump from the
side; a shoulder bag on the person's left appears on the image's right from the front, on
its left from the back, in full from the left side and not at all from the right side; long
hair covers the upper back from behind.
"""

from __future__ import annotations

import numpy as np

from reid_core.data.synthreid.identities import Pedestrian

__all__ = ["draw_pedestrian"]


def _rgb(c: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0  # (3,)


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """Axis-aligned rectangle in body coordinates -> (H, W) mask."""
    return ((u >= u0) & (u < u1)) & ((v >= v0) & (v < v1))  # (1, W) & (H, 1) -> (H, W)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0  # (H, W)


def _limb(u: np.ndarray, v: np.ndarray, pu: float, pv: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across a limb hanging from pivot (pu, pv) at ``angle`` radians
    from the downward vertical (positive towards +u). Returns two (H, W) arrays."""
    s, c = np.float32(np.sin(angle)), np.float32(np.cos(angle))
    du, dv = u - pu, v - pv  # (1, W), (H, 1)
    along = du * s + dv * c  # (H, W)
    across = du * c - dv * s  # (H, W)
    return along, across


def draw_pedestrian(
    img: np.ndarray,
    person: Pedestrian,
    view: str,
    cx: float,
    top: float,
    body_h: float,
    phase: float,
) -> np.ndarray:
    """Paint ``person`` into ``img`` in place and return the pixels it covers.

    Args:
        img: (H, W, 3) float32 RGB canvas in [0, 1], modified in place.
        person: what to draw.
        view: ``"front"``, ``"back"``, ``"left"`` or ``"right"`` (which side of the person
            faces the camera).
        cx: column of the body's centre line, in pixels (may lie outside the image).
        top: row of the top of the head, in pixels.
        body_h: head-to-sole height in pixels.
        phase: walking phase in radians (leg and arm swing).

    Returns:
        (H, W) bool mask of the person's pixels.
    """
    if view not in ("front", "back", "left", "right"):
        raise ValueError(f"view must be front, back, left or right, got {view!r}")
    H, W, _ = img.shape
    u = ((np.arange(W, dtype=np.float32) + 0.5 - cx) / body_h)[None, :]  # (1, W)
    v = ((np.arange(H, dtype=np.float32) + 0.5 - top) / body_h)[:, None]  # (H, 1)
    # Parts are painted as indices into ``palette`` on a one-channel label map (cheaper than
    # three-channel writes); colours are looked up once at the end. Label 0 = not the person.
    labels = np.zeros((H, W), dtype=np.uint8)
    palette: list[np.ndarray] = [np.zeros(3, np.float32)]

    def paint(m: np.ndarray, color: np.ndarray) -> None:
        palette.append(color)
        labels[m] = len(palette) - 1

    p = person
    side = view in ("left", "right")
    facing = -1.0 if view == "left" else 1.0  # seen from its left, a person walks to the image's left
    wf = float(np.clip(p.build / p.height, 0.75, 1.35))  # a box fitted to a tall person makes it thin
    leg_len = 0.47 + 0.06 * (p.height - 0.92) / 0.16
    hip = 1.0 - leg_len
    torso_top, top_end = 0.14, hip + 0.035
    sw = (0.078 if side else 0.13) * wf  # half width at the shoulders
    ww = (0.074 if side else 0.108) * wf  # half width at the waist
    skin, hair, top_c = _rgb(p.skin_rgb), _rgb(p.hair_rgb), _rgb(p.top_rgb)
    bottom, shoe = _rgb(p.bottom_rgb), _rgb(p.shoe_rgb)
    bag = _rgb(p.bag_rgb) if p.bag_rgb is not None else None
    au = np.abs(u)  # (1, W)

    # Behind the body: long hair (front view), a backpack seen from the side.
    if p.hair_style == "long" and view == "front":
        paint(_box(u, v, -0.052, 0.052, 0.07, 0.25), hair)
    if p.bag_type == "backpack" and side and bag is not None:
        a, b = sorted((-facing * sw, -facing * (sw + 0.07)))
        paint(_box(u, v, a, b, 0.165, 0.38), bag)

    # Legs, shoes and the bottom garment.
    swing = 0.3 * np.sin(phase)
    leg_specs = [(0.0, swing), (0.0, -swing)] if side else [(-0.052 * wf, -0.03), (0.052 * wf, 0.03)]
    t = (0.048 if side else 0.046) * wf
    for pu, ang in leg_specs:
        along, across = _limb(u, v, pu, hip, ang)
        length = leg_len / np.cos(ang)
        leg = (along >= 0) & (along < length - 0.035) & (np.abs(across) <= t)  # (H, W)
        if p.bottom_type == "trousers":
            paint(leg, bottom)
        else:
            paint(leg, skin)
            if p.bottom_type == "shorts":
                paint(leg & (along < 0.42 * leg_len), bottom)
        if side:
            toe = facing * across
            sole = (along >= length - 0.035) & (along < length + 0.005) & (toe >= -t) & (toe <= t + 0.045)
        else:
            sole = (along >= length - 0.035) & (along < length + 0.005) & (np.abs(across) <= t + 0.006)
        paint(sole, shoe)
    if p.bottom_type == "skirt":
        flare = 0.4 if side else 0.35
        paint((v >= hip - 0.01) & (v < hip + 0.5 * leg_len) & (au < ww + (v - hip) * flare), bottom)
    else:
        paint(_box(u, v, -ww, ww, hip - 0.01, hip + 0.07), bottom)

    # Torso: the top garment, its pattern and hem.
    frac = np.clip((v - torso_top) / (hip - torso_top), 0.0, 1.0)  # (H, 1)
    torso = (v >= torso_top) & (v < top_end) & (au < sw + (ww - sw) * frac)  # (H, W)
    paint(torso, top_c)
    if p.top_pattern != "plain" and p.pattern_rgb is not None:
        pat = _rgb(p.pattern_rgb)
        if p.top_pattern == "stripes":
            paint(torso & (np.floor((v - torso_top) / 0.045) % 2 == 1), pat)
        elif p.top_pattern == "checks":
            paint(torso & ((np.floor(v / 0.05) + np.floor(u / 0.05)) % 2 == 1), pat)
        elif p.top_pattern == "logo" and view == "front":
            paint(_ellipse(u, v, 0.0, 0.235, 0.042, 0.036), pat)
    if p.hem_style == "band" and p.hem_rgb is not None:
        paint(torso & (v >= top_end - 0.04), _rgb(p.hem_rgb))

    # Arms: both hang beside the torso from the front/back; one swings over it from the side.
    arm_t = (0.03 if side else 0.028) * wf
    sleeve_end = 0.27 if p.sleeves == "long" else 0.1
    arm_specs = [(0.0, -0.4 * np.sin(phase))] if side else [(-(sw + 0.012 * wf), -0.07), (sw + 0.012 * wf, 0.07)]
    for pu, ang in arm_specs:
        along, across = _limb(u, v, pu, 0.15, ang)
        arm = (along >= 0) & (along < 0.31) & (np.abs(across) <= arm_t)  # (H, W)
        paint(arm, skin)
        paint(arm & (along < sleeve_end), top_c)

    # Bags.
    if p.bag_type == "backpack" and bag is not None:
        if view == "front":  # only the straps
            paint(_box(u, v, -0.062 * wf - 0.011, -0.062 * wf + 0.011, 0.142, 0.32), bag)
            paint(_box(u, v, 0.062 * wf - 0.011, 0.062 * wf + 0.011, 0.142, 0.32), bag)
        elif view == "back":
            paint(_box(u, v, -0.082 * wf, 0.082 * wf, 0.165, 0.385), bag)
            paint(_box(u, v, -0.082 * wf, 0.082 * wf, 0.165, 0.2), bag * 0.75)  # the flap
    if p.bag_type == "shoulder" and bag is not None:
        if not side:
            on_right = (p.bag_side == "left") == (view == "front")  # mirror between front and back
            sgn = 1.0 if on_right else -1.0
            bu, bv = sgn * (ww + 0.03), hip - 0.07
            su, sv = -sgn * sw * 0.7, 0.145  # strap from the opposite shoulder
            ang = float(np.arctan2(bu - su, bv - sv))
            along, across = _limb(u, v, su, sv, ang)
            paint((along >= 0) & (along < np.hypot(bu - su, bv - sv)) & (np.abs(across) < 0.009), bag * 0.85)
            paint(_box(u, v, bu - 0.038, bu + 0.038, bv, hip + 0.06), bag)
        elif p.bag_side == view:  # seen from the bag's side; from the other side it is hidden
            paint(_box(u, v, -0.009, 0.009, 0.145, hip - 0.07), bag * 0.85)
            paint(_box(u, v, -0.045 - facing * 0.01, 0.045 - facing * 0.01, hip - 0.07, hip + 0.06), bag)

    # Neck, head, hair.
    paint(_box(u, v, -0.022, 0.022, 0.115, 0.15), skin)
    head_u = facing * 0.01 if side else 0.0
    head = _ellipse(u, v, head_u, 0.068, 0.044 if side else 0.046, 0.064)  # (H, W)
    paint(head, skin)
    if view == "back":
        paint(head, hair)
        if p.hair_style == "long":
            paint(_box(u, v, -0.052, 0.052, 0.07, 0.26), hair)
    elif side:
        paint(head & ((v < 0.045) | (facing * (u - head_u) < -0.005)), hair)
        if p.hair_style == "long":
            a, b = sorted((0.0, -facing * 0.05))
            paint(_box(u, v, a, b, 0.07, 0.24), hair)
    else:
        fringe = (v < 0.045) | (au > 0.032) if p.hair_style == "long" else (v < 0.04)
        paint(head & fringe, hair)

    # Cylinder-like shading across the body, so a garment is not one flat colour.
    mask = labels > 0  # (H, W)
    r = np.clip(au / (sw + 0.03), 0.0, 1.0)  # (1, W)
    shade = np.broadcast_to(1.0 - 0.3 * r * r, (H, W))[mask]  # (P,) for the P person pixels
    colors = np.stack(palette).astype(np.float32)  # (K, 3)
    img[mask] = colors[labels[mask]] * shade[:, None]  # (P, 3)
    return mask
