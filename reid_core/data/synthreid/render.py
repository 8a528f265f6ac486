"""Turning one :class:`ImageSpec` into pixels: scene, person, occluder, then the camera.

The camera pipeline follows the order of a real one: scene light, the camera's colour cast,
brightness and contrast (``camera_shift``), optical blur (``blur``), a low-resolution sensor
(``resolution_drop``: down-sampling, sensor noise at that resolution, up-sampling back) and
sensor noise (``noise``). Each image draws its texture, occluder geometry, stranger and noise
from its own random streams seeded by ``(seed, index)``, so the bytes do not depend on how
the images are split over worker processes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.draw import draw_pedestrian
from reid_core.data.synthreid.identities import Pedestrian, sample_pedestrian
from reid_core.data.synthreid.plan import BODY_FRACTION, ImageSpec
from reid_core.data.synthreid.scene import STYLES, VIEWS, Camera, background_panorama

__all__ = ["render_image"]

_PANORAMAS: dict[tuple, np.ndarray] = {}  # per process: one panorama per camera
_NOISE_STD = 3.0  # grey levels at noise = 1


def _panorama(cfg: SynthReIDConfig, camera: Camera) -> np.ndarray:
    key = (cfg.seed, cfg.style, camera, cfg.height, cfg.width, cfg.background_clutter)
    if key not in _PANORAMAS:
        if len(_PANORAMAS) > 64:
            _PANORAMAS.clear()
        _PANORAMAS[key] = background_panorama(
            camera, cfg.style, cfg.seed, cfg.height, cfg.width, cfg.background_clutter
        )
    return _PANORAMAS[key]


def _draw_occluder(
    img: np.ndarray,
    spec: ImageSpec,
    cfg: SynthReIDConfig,
    cx: float,
    top: float,
    body_h: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw the spec's occluder (a pole, a box, or a passer-by) in front of the person.

    Returns:
        (H, W) bool mask of the occluder's pixels (all False for ``"none"``).
    """
    H, W, _ = img.shape
    colors = STYLES[cfg.style].occluder_colors
    color = np.asarray(colors[int(rng.integers(len(colors)))], np.float32)  # (3,)
    a, b, c, d = rng.random(4)  # drawn for every image, used by whichever kind applies
    xs = np.arange(W, dtype=np.float32)[None, :] + 0.5  # (1, W)
    ys = np.arange(H, dtype=np.float32)[:, None] + 0.5  # (H, 1)
    if spec.occluder == "pole":
        x0 = cx + (a - 0.5) * 0.5 * W
        half = (0.035 + 0.035 * b) * W
        m = np.broadcast_to(np.abs(xs - x0) < half, (H, W))  # (H, W)
        shade = 1.0 - 0.35 * np.abs(xs - x0) / half  # (1, W): a round pole
        img[:] = np.where(m[..., None], color * shade[..., None], img)  # (H, W, 3)
        return m
    if spec.occluder == "box":
        y0 = H * (1.0 - (0.22 + 0.23 * a))
        x0 = (b - 0.5) * 0.6 * W
        x1 = x0 + (0.6 + 0.6 * c) * W
        m = (ys >= y0) & (xs >= x0) & (xs < x1)  # (H, W)
        img[m] = color
        img[m & (ys < y0 + 2)] = color * 0.7  # the top edge
        return m
    if spec.occluder == "person":
        sign = 1.0 if d < 0.5 else -1.0
        view = VIEWS[int(4 * c) % 4]
        stranger = sample_pedestrian(np.random.default_rng([cfg.seed, 4, spec.index, 3]))
        return draw_pedestrian(
            img,
            stranger,
            view,
            cx + sign * (0.45 + 0.3 * a) * W,
            top + (b - 0.5) * 0.1 * H,
            body_h * (0.95 + 0.15 * c),
            2 * np.pi * a,
        )
    return np.zeros((H, W), dtype=bool)


def render_image(
    spec: ImageSpec, person: Pedestrian | None, camera: Camera, cfg: SynthReIDConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of the world.

    Args:
        spec: what to draw (from :func:`reid_core.data.synthreid.plan.plan_synthreid`).
        person: the identity's pedestrian when ``spec.subject == "identity"``, else ignored.
        camera: the camera of ``spec.camera``.
        cfg: the world's config.

    Returns:
        ``(image, mask)``: (H, W, 3) uint8 RGB as written to disk, and the (H, W) bool mask of
        the subject's visible pixels (after occlusion; before camera blur), for tests and
        figures.
    """
    H, W = cfg.height, cfg.width
    geo = np.random.default_rng([cfg.seed, 4, spec.index, 0])  # background, occluder, lighting
    noise_rng = np.random.default_rng([cfg.seed, 4, spec.index, 2])

    pano = _panorama(cfg, camera)  # (H, PW, 3)
    x0 = int(geo.integers(0, pano.shape[1] - W + 1))
    img = pano[:, x0 : x0 + W].copy()  # (H, W, 3)

    body_h = BODY_FRACTION * H * spec.scale
    cx = W / 2 + spec.shift_x * W
    top = (H - body_h) / 2 + spec.shift_y * H
    if spec.subject == "stranger":  # someone not in the data set (distractors, junk)
        subject = sample_pedestrian(np.random.default_rng([cfg.seed, 4, spec.index, 1]))
    elif spec.subject == "identity":
        if person is None:
            raise ValueError(f"image {spec.filename} shows an identity but person is None")
        subject = person
    else:
        subject = None
    mask = np.zeros((H, W), dtype=bool)
    if subject is not None:
        mask = draw_pedestrian(img, subject, spec.view, cx, top, body_h, spec.phase)
    occ = _draw_occluder(img, spec, cfg, cx, top, body_h, geo)
    mask &= ~occ

    # The camera: per-image light jitter, colour cast, brightness, contrast.
    jitter = 1.0 + 0.08 * cfg.camera_shift * float(geo.normal())
    gains = np.asarray(camera.gains, np.float32) * (camera.brightness * jitter)  # (3,)
    # ((img * gains - 0.5) * contrast + 0.5) * 255, rounded: folded into one multiply-add.
    scale = gains * (camera.contrast * 255.0)  # (3,)
    offset = np.float32((0.5 - 0.5 * camera.contrast) * 255.0 + 0.5)
    img = img * scale + offset  # (H, W, 3)
    np.clip(img, 0.0, 255.0, out=img)
    out = Image.fromarray(img.astype(np.uint8))
    if camera.blur_sigma >= 0.25:
        out = out.filter(ImageFilter.GaussianBlur(radius=camera.blur_sigma))
    low = camera.resolution_factor > 1.05
    if low:
        out = out.resize(
            (max(1, round(W / camera.resolution_factor)), max(1, round(H / camera.resolution_factor))),
            Image.Resampling.BILINEAR,
        )
    arr = np.asarray(out, dtype=np.float32)  # (h, w, 3)
    noise = noise_rng.standard_normal(size=arr.shape, dtype=np.float32)  # (h, w, 3)
    arr += noise * np.float32(_NOISE_STD * cfg.noise) + np.float32(0.5)
    np.clip(arr, 0.0, 255.0, out=arr)
    arr = arr.astype(np.uint8)
    if low:
        arr = np.asarray(Image.fromarray(arr).resize((W, H), Image.Resampling.BILINEAR))
    return arr, mask
