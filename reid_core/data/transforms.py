r"""Image transforms for re-ID training and testing, on PIL images and uint8 CHW tensors.

Training: resize to (height, width), random horizontal flip, zero-pad and random crop back
to (height, width), optional colour jitter, random erasing, normalisation
:math:`x' = (x / 255 - \mu) / \sigma` per channel. Testing: resize and normalise.
This is the augmentation of the strong re-ID baseline (Luo et al. CVPRW 2019) that the book's
chapters share.

Random erasing (Zhong et al. AAAI 2020, arXiv 1708.04896) picks, with probability p, a
rectangle of area :math:`S_e \sim U(s_l, s_h)\,HW` and aspect ratio
:math:`r_e \sim U(r_1, 1/r_1)` (:math:`s_l=0.02, s_h=0.4, r_1=0.3`), i.e.
:math:`H_e=\sqrt{S_e r_e}, W_e=\sqrt{S_e/r_e}`, at a uniform position, and fills it with the
per-channel mean. It runs here *before* normalisation, so the filled rectangle is exactly 0
in the normalised image; several popular implementations fill the already-normalised tensor
with the raw mean values, which is not the mean at all.

Every step after the first converts the input to a tensor, so a PIL image and the
equivalent uint8 tensor give the same output for the same random state.

Chapter: 01 (the data pipeline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomErasing",
    "ReIDTransform",
    "build_transforms",
    "denormalize",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _check_channels(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


class RandomErasing(nn.Module):
    """Random erasing of one rectangle (Zhong et al. AAAI 2020), on a float (C, H, W) image.

    Args:
        p: probability of erasing.
        area: (s_l, s_h), the erased area as a fraction of the image's.
        aspect: (r_1, r_2), the range of the rectangle's height / width.
        value: the per-channel fill value (the mean, in the units of the image).
        max_attempts: tries to draw a rectangle that fits before leaving the image unchanged
            (the paper's code tries 100 times).

    The rectangle's integer size is accepted only if its area lies in ``area`` and it fits
    strictly inside the image, so the bounds hold exactly despite rounding.
    """

    def __init__(
        self,
        p: float = 0.5,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        value: Sequence[float] = IMAGENET_MEAN,
        max_attempts: int = 100,
    ) -> None:
        super().__init__()
        _check_probability("p", p)
        if not 0.0 < area[0] <= area[1] <= 1.0:
            raise ValueError(f"area must satisfy 0 < s_l <= s_h <= 1, got {area}")
        if not 0.0 < aspect[0] <= aspect[1]:
            raise ValueError(f"aspect must satisfy 0 < r_1 <= r_2, got {aspect}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.p, self.area, self.aspect, self.max_attempts = p, area, aspect, max_attempts
        self.value = tuple(float(v) for v in value)

    def sample_box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """Draw ``(top, left, h, w)`` of a rectangle obeying the bounds, or ``None``."""
        image_area = height * width
        for _ in range(self.max_attempts):
            target = float(torch.empty(()).uniform_(self.area[0], self.area[1])) * image_area
            ratio = float(torch.empty(()).uniform_(self.aspect[0], self.aspect[1]))
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            area_ok = self.area[0] * image_area <= h * w <= self.area[1] * image_area
            if 0 < h < height and 0 < w < width and area_ok:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        return None

    def forward(self, image: Tensor) -> Tensor:
        """Args: image (C, H, W) float. Returns: (C, H, W), a new tensor when erased."""
        if image.dim() != 3 or not image.is_floating_point():
            raise ValueError(f"RandomErasing expects a float (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
        if len(self.value) not in (1, image.shape[0]):
            raise ValueError(f"value has {len(self.value)} channels, the image {image.shape[0]}")
        if float(torch.rand(())) >= self.p:
            return image
        box = self.sample_box(image.shape[1], image.shape[2])
        if box is None:
            return image
        top, left, h, w = box
        fill = torch.tensor(self.value, dtype=image.dtype, device=image.device).view(-1, 1, 1)  # (C, 1, 1)
        erased = image.clone()  # (C, H, W)
        erased[:, top : top + h, left : left + w] = fill
        return erased

    def extra_repr(self) -> str:
        return f"p={self.p}, area={self.area}, aspect=({self.aspect[0]:.2f}, {self.aspect[1]:.2f})"


class ReIDTransform:
    """A transform pipeline that accepts a PIL image or an RGB uint8 (3, H, W) tensor.

    Args:
        pipeline: the torchvision v2 pipeline, ending in a float (3, height, width) tensor.

    Raises (when called):
        ValueError: a tensor that is not uint8 of shape (3, H, W).
        TypeError: an input that is neither a PIL image nor a tensor.
    """

    def __init__(self, pipeline: v2.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: Any) -> Tensor:
        """Args: image, PIL or (3, H, W) uint8. Returns: (3, height, width) float32, normalised."""
        from PIL import Image

        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                image = image.convert("RGB")
        elif isinstance(image, Tensor):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"expected an RGB uint8 tensor of shape (3, H, W), got {image.dtype} {tuple(image.shape)}"
                )
        else:
            raise TypeError(f"expected a PIL image or a uint8 (3, H, W) tensor, got {type(image).__name__}")
        return self.pipeline(image)

    def __repr__(self) -> str:
        return f"ReIDTransform({self.pipeline!r})"


def build_transforms(
    height: int,
    width: int,
    is_train: bool,
    flip_p: float = 0.5,
    pad: int = 10,
    random_erasing_p: float = 0.5,
    color_jitter: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> ReIDTransform:
    """The training or test transform of the strong re-ID baseline.

    Args:
        height: output height (e.g. 256).
        width: output width (e.g. 128).
        is_train: the training pipeline (augmentations) or the test one (resize + normalise).
        flip_p: probability of a horizontal flip.
        pad: zero padding on each side before the random crop back to (height, width).
        random_erasing_p: probability of random erasing (Zhong et al. 2020).
        color_jitter: add colour jitter (brightness 0.2, contrast 0.15; torchreid's choice).
        mean: per-channel mean mu, of images scaled to [0, 1].
        std: per-channel standard deviation sigma.

    Returns:
        A callable mapping a PIL image or a uint8 (3, H, W) tensor to a float32
        (3, height, width) tensor, :math:`(x / 255 - \\mu) / \\sigma`.

    Raises:
        ValueError: a non-positive size, a probability outside [0, 1], a negative pad, or a
            mean / std without 3 positive values.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    _check_probability("flip_p", flip_p)
    _check_probability("random_erasing_p", random_erasing_p)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    mean, std = _check_channels("mean", mean), _check_channels("std", std)
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}")

    steps: list[Any] = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if is_train:
        if flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(p=flip_p))
        if pad > 0:
            steps += [v2.Pad(pad, fill=0), v2.RandomCrop((height, width))]
        if color_jitter:
            steps.append(v2.ColorJitter(brightness=0.2, contrast=0.15))
    steps.append(v2.ToDtype(torch.float32, scale=True))  # uint8 [0, 255] -> float [0, 1]
    if is_train and random_erasing_p > 0:
        steps.append(RandomErasing(p=random_erasing_p, value=mean))  # before normalising: fills with the mean
    steps += [v2.Normalize(mean=list(mean), std=list(std)), v2.ToPureTensor()]
    return ReIDTransform(v2.Compose(steps))


def denormalize(tensor: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Undo the normalisation for display: :math:`x = x' \\sigma + \\mu`, clamped to [0, 1].

    Args:
        tensor: (3, H, W) or (B, 3, H, W) normalised images.
        mean: the mean used to normalise.
        std: the standard deviation used to normalise.

    Returns:
        The same shape, float in [0, 1] (for ``matplotlib``: ``x.permute(1, 2, 0)``).
    """
    if tensor.dim() not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got {tuple(tensor.shape)}")
    mean_t = torch.tensor(_check_channels("mean", mean), dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std_t = torch.tensor(_check_channels("std", std), dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std_t + mean_t).clamp(0.0, 1.0)  # (..., 3, H, W)
