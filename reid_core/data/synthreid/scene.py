"""Where SynthReID's pedestrians are seen: scene styles, cameras and their backgrounds.

A *style* is a kind of scene (``"a"``: an indoor mall with warm light and shop fronts;
``"b"``: a street with cool, dimmer light, foliage and asphalt, and blurrier, lower-resolution
cameras). A *camera* within a style has its own colour cast, brightness, contrast, blur,
resolution, preferred viewpoint and background panorama; the crop behind each image is a
window of that panorama, so images of one camera share a background as in a real camera
network. Cross-domain chapter: train on one style, test on the other.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["SceneStyle", "Camera", "STYLES", "VIEWS", "make_cameras", "background_panorama"]

VIEWS = ("front", "back", "left", "right")  # "left": the camera sees the person's left side


@dataclass(frozen=True)
class SceneStyle:
    """Statistics of one kind of scene (colours are RGB in [0, 1])."""

    name: str
    upper_colors: tuple[tuple[float, float, float], ...]  # walls / sky, one picked per camera
    lower_colors: tuple[tuple[float, float, float], ...]  # floor / road
    block_colors: tuple[tuple[float, float, float], ...]  # shop fronts / trees / cars
    blocks_are_round: bool  # foliage blobs (street) vs rectangular shop fronts (mall)
    cast_bias: tuple[float, float, float]  # mean per-channel gain offset (warm vs cool light)
    cast_spread: float  # per-camera per-channel gain spread
    brightness_range: tuple[float, float]  # per-camera brightness offset range
    contrast_range: tuple[float, float]
    blur_range: tuple[float, float]  # Gaussian sigma in pixels at 128x64
    resolution_range: tuple[float, float]  # down-sampling factor (1 = none)
    light_gradient: float  # top-to-bottom lighting fall-off of the scene
    occluder_colors: tuple[tuple[float, float, float], ...]


STYLES: dict[str, SceneStyle] = {
    "a": SceneStyle(
        name="a",
        upper_colors=((0.78, 0.74, 0.68), (0.70, 0.70, 0.72), (0.82, 0.78, 0.70), (0.62, 0.60, 0.58)),
        lower_colors=((0.55, 0.50, 0.45), (0.62, 0.60, 0.58), (0.48, 0.44, 0.40), (0.70, 0.66, 0.60)),
        block_colors=(
            (0.72, 0.42, 0.38),
            (0.40, 0.52, 0.70),
            (0.80, 0.74, 0.50),
            (0.45, 0.60, 0.48),
            (0.60, 0.52, 0.66),
            (0.92, 0.92, 0.90),
            (0.42, 0.36, 0.32),
        ),
        blocks_are_round=False,
        cast_bias=(0.04, 0.0, -0.05),
        cast_spread=0.15,
        brightness_range=(-0.25, 0.2),
        contrast_range=(-0.15, 0.1),
        blur_range=(0.0, 1.1),
        resolution_range=(1.0, 2.0),
        light_gradient=0.15,
        occluder_colors=((0.55, 0.55, 0.58), (0.80, 0.62, 0.35), (0.30, 0.30, 0.32), (0.85, 0.85, 0.82)),
    ),
    "b": SceneStyle(
        name="b",
        upper_colors=((0.62, 0.72, 0.85), (0.70, 0.74, 0.78), (0.55, 0.62, 0.70), (0.80, 0.82, 0.85)),
        lower_colors=((0.30, 0.30, 0.32), (0.38, 0.37, 0.36), (0.26, 0.28, 0.27), (0.45, 0.44, 0.40)),
        block_colors=(
            (0.20, 0.42, 0.18),
            (0.30, 0.52, 0.22),
            (0.15, 0.32, 0.15),
            (0.55, 0.50, 0.40),
            (0.45, 0.40, 0.35),
            (0.25, 0.35, 0.20),
        ),
        blocks_are_round=True,
        cast_bias=(-0.04, 0.0, 0.07),
        cast_spread=0.18,
        brightness_range=(-0.35, 0.1),
        contrast_range=(-0.25, 0.1),
        blur_range=(0.3, 1.6),
        resolution_range=(1.2, 2.8),
        light_gradient=-0.2,
        occluder_colors=((0.35, 0.38, 0.35), (0.60, 0.20, 0.15), (0.20, 0.22, 0.25), (0.70, 0.68, 0.55)),
    ),
}


@dataclass(frozen=True)
class Camera:
    """One camera of the network (values already scaled by the config's knobs)."""

    index: int  # 1-based, as in the file name
    gains: tuple[float, float, float]  # per-channel colour cast
    brightness: float  # multiplicative
    contrast: float
    blur_sigma: float  # pixels at the output size
    resolution_factor: float  # down-then-up sampling factor (1 = none)
    view_probs: tuple[float, float, float, float]  # over VIEWS
    upper_color: tuple[float, float, float]
    lower_color: tuple[float, float, float]
    horizon: float  # row of the wall/floor boundary, as a fraction of the height


def style_seed(style: str) -> int:
    """A stable integer for a style name (Python's ``hash`` of a str changes per process)."""
    return zlib.crc32(style.encode())


def make_cameras(
    style: str,
    num_cameras: int,
    seed: int,
    camera_shift: float,
    blur: float,
    resolution_drop: float,
) -> list[Camera]:
    """The cameras of a style, deterministic in ``(style, num_cameras, seed)``.

    Args:
        style: a key of :data:`STYLES`.
        num_cameras: how many.
        seed: the world's seed.
        camera_shift, blur, resolution_drop: the config's knobs in [0, 1]; 0 gives neutral
            gains, brightness and contrast / no blur / full resolution.

    Returns:
        ``num_cameras`` cameras, indexed from 1.
    """
    s = STYLES[style]
    rng = np.random.default_rng([seed, 2, style_seed(style)])
    views = rng.permutation(len(VIEWS))
    cams = []
    for i in range(num_cameras):
        gains = 1.0 + camera_shift * (np.asarray(s.cast_bias) + rng.uniform(-s.cast_spread, s.cast_spread, 3))
        brightness = 1.0 + camera_shift * rng.uniform(*s.brightness_range)
        contrast = 1.0 + camera_shift * rng.uniform(*s.contrast_range)
        sigma = blur * rng.uniform(*s.blur_range)
        res = 1.0 + resolution_drop * (rng.uniform(*s.resolution_range) - 1.0)
        if i == num_cameras - 1:  # one clearly low-resolution camera, like Market-1501's c6
            res = 1.0 + resolution_drop * (s.resolution_range[1] + 0.8 - 1.0)
        probs = np.full(len(VIEWS), 0.15)
        probs[views[i % len(VIEWS)]] = 0.55
        cams.append(
            Camera(
                index=i + 1,
                gains=tuple(float(g) for g in gains),  # type: ignore[arg-type]
                brightness=float(brightness),
                contrast=float(contrast),
                blur_sigma=float(sigma),
                resolution_factor=float(res),
                view_probs=tuple(float(p) for p in probs / probs.sum()),  # type: ignore[arg-type]
                upper_color=s.upper_colors[int(rng.integers(len(s.upper_colors)))],
                lower_color=s.lower_colors[int(rng.integers(len(s.lower_colors)))],
                horizon=float(rng.uniform(0.45, 0.7)),
            )
        )
    return cams


def background_panorama(
    camera: Camera, style: str, seed: int, height: int, width: int, clutter: float = 1.0, span: int = 4
) -> np.ndarray:
    """The scene behind one camera, ``span`` image widths wide; images crop windows of it.

    Args:
        camera: the camera.
        style: its style name.
        seed: the world's seed.
        height, width: the image size.
        clutter: 0..1, blend from the style's plain backdrop (the same for every camera: the
            first wall and floor colours, no objects, no texture) to the camera's own scene.
        span: panorama width in image widths.

    Returns:
        (height, span * width, 3) float32 RGB in [0, 1].
    """
    s = STYLES[style]
    rng = np.random.default_rng([seed, 5, style_seed(style), camera.index, height, width])
    pw = span * width
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height  # (H, 1)
    xs = (np.arange(pw, dtype=np.float32) + 0.5)[None, :] / height  # (1, PW) in height units
    upper = np.asarray(camera.upper_color, np.float32)
    lower = np.asarray(camera.lower_color, np.float32)
    is_lower = ys >= camera.horizon  # (H, 1)
    # Walls fade with height; the floor gets lighter towards the camera.
    img = np.where(
        is_lower[..., None],
        lower * (0.85 + 0.3 * (ys - camera.horizon))[..., None],
        upper * (1.0 - 0.15 * (camera.horizon - ys))[..., None],
    )  # (H, 1, 3)
    img = np.broadcast_to(img, (height, pw, 3)).copy()  # (H, PW, 3)
    for _ in range(int(rng.integers(3, 7))):  # shop fronts (mall) or trees/cars (street)
        color = np.asarray(s.block_colors[int(rng.integers(len(s.block_colors)))], np.float32)
        cx = rng.uniform(0, pw / height)
        w = rng.uniform(0.1, 0.35)
        if s.blocks_are_round:
            cy = rng.uniform(0.1, camera.horizon)
            r = rng.uniform(0.08, 0.22)
            m = ((xs - cx) / (0.8 * r)) ** 2 + ((ys - cy) / r) ** 2 <= 1.0  # (H, PW)
        else:
            top = rng.uniform(0.05, 0.3)
            m = (np.abs(xs - cx) < w) & (ys >= top) & (ys < camera.horizon)  # (H, PW)
        img[m] = color * rng.uniform(0.8, 1.1)
    # Floor tiles (mall) or kerb lines (street): faint periodic lines below the horizon.
    period = 0.12 if style == "a" else 0.3
    lines = (np.mod(xs + 0.5 * ys, period) < 0.012) & is_lower  # (H, PW)
    img[lines] *= 0.85
    # Low-frequency texture: a coarse random grid, bilinearly upsampled.
    coarse = rng.normal(0.0, 0.05, size=(height // 8 + 1, pw // 8 + 1)).astype(np.float32)
    tex = np.asarray(Image.fromarray(coarse, mode="F").resize((pw, height), Image.Resampling.BILINEAR))  # (H, PW)
    img = img * (1.0 + tex[..., None])
    plain = np.where(
        (ys >= 0.6)[..., None], np.asarray(s.lower_colors[0], np.float32), np.asarray(s.upper_colors[0], np.float32)
    )  # (H, 1, 3)
    img = clutter * img + (1.0 - clutter) * plain  # (H, PW, 3)
    img *= (1.0 - s.light_gradient * (ys - 0.5))[..., None]  # scene lighting direction
    return np.clip(img, 0.0, 1.0).astype(np.float32)
