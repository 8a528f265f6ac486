"""Colour histograms: the classic hand-crafted re-ID descriptor, used as a baseline.

Before deep features, re-ID matched people by the colours of their clothes: histograms of
HSV (or RGB) values, often computed per horizontal stripe so that "red top, black trousers"
differs from "black top, red trousers" (e.g. the stripe colour histograms inside ELF, Gray &
Tao 2008, and LOMO, Liao et al. 2015). They are cheap and need no training, and they fail
exactly where re-ID is hard: a camera's colour cast or brightness moves every bin, a change
of viewpoint shows other colours (a backpack from behind, a logo from the front), an
occluder adds foreign colours, and look-alike people share their histogram. The basics
chapter (``notebooks/01_reid_basics.py``) and ``bench/synthreid_difficulty.py`` use it to show
that SynthReID is not solved by colour alone while a CNN learns the invariances.

Feature for one image, stripes ``s = 1..S`` (equal row bands), channels ``c`` and bins
``b = 1..B``:

.. math::
    h_{s,c,b} = \\#\\{(y, x) \\in \\text{stripe } s : \\lfloor B\\, q_c(y, x) \\rfloor = b - 1\\},
    \\qquad f = h / \\textstyle\\sum h,

where :math:`q_c \\in [0, 1)` is the pixel's channel value: the hue in turns, the
saturation (1 goes to the last bin), and R, G, B or the HSV value (the max channel) as
``v / 256`` for 8-bit ``v`` (so the 256 levels fall into equal ranges); see :func:`hsv_bins`
for the exact integer binning. So ``f`` has ``D = S * 3 * B`` entries that sum to 1 (L1-normalised).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["color_histogram_features", "hsv_bins"]


def hsv_bins(rgb: np.ndarray, bins: int) -> np.ndarray:
    """Bin of hue, saturation and value of every 8-bit RGB pixel, in exact integer arithmetic.

    With ``M = max(r, g, b)``, ``d = M - min(r, g, b)``, the hue in turns is
    ``t / (6 d)`` with ``t = (k d + n) mod 6d``, where ``(k, n)`` is ``(0, g - b)``,
    ``(2, b - r)`` or ``(4, r - g)`` as red, green or blue is the largest; the saturation is
    ``d / M`` and the value ``M``. Their bins, ``floor(t B / 6d)``, ``min(floor(d B / M), B - 1)``
    and ``floor(M B / 256)``, are integer divisions, so a colour that lies exactly on a bin edge
    is never moved across it by rounding. Greys (``d = 0``) get hue bin 0.

    Args:
        rgb: (..., 3) integer array with values in 0..255.
        bins: bins per channel.

    Returns:
        (..., 3) int32 bins of hue, saturation and value.
    """
    x = rgb.astype(np.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = x.max(axis=-1)  # (...,)
    d = mx - x.min(axis=-1)  # (...,)
    is_r, is_g = mx == r, mx == g
    n = np.where(is_r, g - b, np.where(is_g, b - r, r - g))  # (...,)
    k = np.where(is_r, 0, np.where(is_g, 2, 4))  # (...,)
    six_d = np.maximum(6 * d, 1)  # greys: t = 0 below anyway
    t = np.mod(k * d + n, six_d)  # (...,) in [0, 6d)
    hue = (t * bins) // six_d
    sat = np.minimum((d * bins) // np.maximum(mx, 1), bins - 1)
    val = (mx * bins) // 256
    return np.stack([hue, sat, val], axis=-1).astype(np.int32)


def _as_array(images: np.ndarray) -> np.ndarray:
    arr = images.numpy() if hasattr(images, "numpy") and not isinstance(images, np.ndarray) else images
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        got = f"{arr.dtype} {tuple(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"images must be uint8 (N, H, W, 3) RGB or a list of image paths, got {got}")
    return arr


def _load_paths(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Read images into a uint8 (N, H, W, 3) array; every image must have the same size."""
    loaded = []
    for p in paths:
        try:
            with Image.open(p) as im:
                loaded.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read image {p}: {e}") from e
    shapes = {a.shape for a in loaded}
    if len(shapes) != 1:
        raise ValueError(f"images must share one size, got sizes {sorted(shapes)}")
    return np.stack(loaded)  # (N, H, W, 3)


def _histograms(arr: np.ndarray, bins: int, stripes: int, color_space: str) -> np.ndarray:
    """Unnormalised counts for a uint8 (n, H, W, 3) block -> (n, stripes * 3 * bins)."""
    n, h, _, _ = arr.shape
    if color_space == "hsv":
        idx = hsv_bins(arr, bins)  # (n, H, W, 3)
    else:
        idx = (arr.astype(np.int32) * bins) // 256  # (n, H, W, 3) bin per channel
    stripe_of_row = (np.arange(h, dtype=np.int32) * stripes) // h  # (H,) equal bands
    d = stripes * 3 * bins
    flat = (stripe_of_row[None, :, None, None] * 3 + np.arange(3, dtype=np.int32)) * bins + idx  # (n, H, W, 3)
    flat += (np.arange(n, dtype=np.int32) * d)[:, None, None, None]  # each image its own block
    return np.bincount(flat.ravel(), minlength=n * d).reshape(n, d).astype(np.float32)  # (n, D)


def color_histogram_features(
    images: np.ndarray | Sequence[str | os.PathLike],
    bins: int = 8,
    stripes: int = 6,
    color_space: str = "hsv",
    chunk_size: int = 512,
) -> np.ndarray:
    """Per-stripe, per-channel colour histograms, L1-normalised (see the module docstring).

    Args:
        images: uint8 (N, H, W, 3) RGB array (or a CPU torch tensor of that form), or a list
            of image paths of one size (read ``chunk_size`` at a time).
        bins: bins per channel.
        stripes: horizontal bands, 1..H (1 = one histogram of the whole image); row ``y``
            falls in band ``floor(y * stripes / H)``.
        color_space: ``"hsv"`` or ``"rgb"``.
        chunk_size: images per vectorised block (bounds the temporary memory).

    Returns:
        (N, stripes * 3 * bins) float32; each row sums to 1. Layout: stripe-major, then
        channel (H, S, V or R, G, B), then bin.

    Example:
        >>> f = color_histogram_features(np.zeros((2, 128, 64, 3), np.uint8), bins=8, stripes=6)
        >>> f.shape
        (2, 144)
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= 256:
        raise ValueError(f"bins must be an integer in [1, 256], got {bins!r}")
    if color_space not in ("hsv", "rgb"):
        raise ValueError(f"color_space must be 'hsv' or 'rgb', got {color_space!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    is_paths = isinstance(images, (list, tuple))
    if is_paths and not images:
        raise ValueError("images is an empty list of paths")
    arr = None if is_paths else _as_array(images)  # type: ignore[arg-type]
    n = len(images)
    out = []
    size: tuple[int, ...] | None = None
    for start in range(0, n, chunk_size):
        block = _load_paths(images[start : start + chunk_size]) if is_paths else arr[start : start + chunk_size]  # type: ignore[index]
        if size is not None and block.shape[1:] != size:
            raise ValueError(f"images must share one size, got {size} and {block.shape[1:]}")
        size = block.shape[1:]
        h = block.shape[1]
        if not isinstance(stripes, int) or isinstance(stripes, bool) or not 1 <= stripes <= h:
            raise ValueError(f"stripes must be an integer in [1, {h}] (the image height), got {stripes!r}")
        out.append(_histograms(block, bins, stripes, color_space))
    if not out:  # an empty (0, H, W, 3) array
        return np.zeros((0, stripes * 3 * bins), np.float32)
    hist = np.concatenate(out)  # (N, D)
    return hist / hist.sum(axis=1, keepdims=True)
