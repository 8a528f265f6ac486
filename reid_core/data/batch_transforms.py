r"""The training augmentation applied to a whole uint8 batch at once, on the CPU or on CUDA.

:func:`~reid_core.data.transforms.build_transforms` augments one image at a time: on a
2-core machine its Python overhead (about 0.3 ms an image at 64x32) is a noticeable share of a
small network's step, and on a GPU it keeps the augmentation on the CPU. :class:`BatchAugment`
draws the same random quantities for every image of a (B, 3, H, W) uint8 batch with a few
tensor operations, in the same order and from the same distributions:

1. horizontal flip with probability ``flip_p``;
2. zero padding by ``pad`` on each side and a crop back to (H, W) at an offset
   :math:`(d_y, d_x)`, each uniform on :math:`\{0, \dots, 2\,\mathrm{pad}\}`;
3. conversion to float :math:`x / 255`;
4. random erasing (Zhong et al. AAAI 2020, arXiv 1708.04896) with probability
   ``random_erasing_p``: up to ``max_attempts`` draws of an area :math:`S_e \sim U(s_l, s_h)\,HW`
   and an aspect :math:`r_e \sim U(r_1, r_2)`, rounded to :math:`h = \mathrm{round}\sqrt{S_e r_e}`,
   :math:`w = \mathrm{round}\sqrt{S_e / r_e}`; the first draw with :math:`0 < h < H`,
   :math:`0 < w < W` and :math:`s_l HW \le hw \le s_h HW` is kept (none: no erasing) and placed
   at a uniform position; the box is filled with the per-channel mean;
5. normalisation :math:`x' = (x - \mu) / \sigma`, so an erased pixel is exactly 0.

The batch arrives already resized to (H, W) (see ``ImageDataset(size=...)``), which gives the
same pixels as the per-sample pipeline's first step. Given the same flip, offsets and box, the
output equals the per-sample transform's output exactly (``tests/test_batch_transforms.py``
checks this, and compares the distributions of the random quantities over many batches).

:class:`AugmentedLoader` wraps a loader of uint8 batches, moves each batch to a device and
augments it there; the trainer then receives float batches, as from the per-sample loader.

Chapters: every chapter's training loader (``build_train_loader(batch_augment=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import default_collate

from reid_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["AugmentParams", "AugmentedLoader", "BatchAugment", "NormalizingCollate"]


@dataclass
class AugmentParams:
    """The random quantities of one batch, one entry per image.

    Attributes:
        flip: (B,) bool, mirrored left-right.
        offset_y, offset_x: (B,) int64 in [0, 2 pad], the crop's corner in the padded image.
        erase: (B,) bool, a box is erased.
        box_top, box_left, box_height, box_width: (B,) int64, the erased box in the output
            image (meaningful where ``erase``; 0 elsewhere).
    """

    flip: Tensor
    offset_y: Tensor
    offset_x: Tensor
    erase: Tensor
    box_top: Tensor
    box_left: Tensor
    box_height: Tensor
    box_width: Tensor


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def _channels(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


class BatchAugment:
    """Flip, pad + random crop, random erasing and normalisation of a uint8 (B, 3, H, W) batch.

    Args:
        height, width: the size of the batches it accepts (H, W).
        flip_p: probability of a horizontal flip.
        pad: zero padding on each side before the random crop back to (H, W).
        random_erasing_p: probability of random erasing.
        mean, std: per-channel mean and standard deviation of images scaled to [0, 1]; the
            erased box is filled with ``mean``.
        erasing_area: (s_l, s_h), the erased area as a fraction of the image's.
        erasing_aspect: (r_1, r_2), the range of the box's height / width.
        max_attempts: draws of a box before giving up (as the per-sample transform).
        color_jitter: not available in the batched path; ``True`` raises (use the per-sample
            transforms). The argument exists so that ``build_transforms``' keywords pass through.
        generator: the source of randomness, on the batches' device; ``None`` draws from torch's
            global generator of that device (seeded by ``torch.manual_seed``, like the per-sample
            transforms).

    Raises:
        ValueError: a probability outside [0, 1], a negative pad, a bad range, a mean or std
            without 3 values, a non-positive std, or ``color_jitter=True``.

    Example:
        >>> augment = BatchAugment(64, 32)
        >>> batch = torch.randint(0, 256, (8, 3, 64, 32), dtype=torch.uint8)
        >>> augment(batch).shape
        torch.Size([8, 3, 64, 32])
    """

    def __init__(
        self,
        height: int,
        width: int,
        flip_p: float = 0.5,
        pad: int = 10,
        random_erasing_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        erasing_area: tuple[float, float] = (0.02, 0.4),
        erasing_aspect: tuple[float, float] = (0.3, 1 / 0.3),
        max_attempts: int = 100,
        color_jitter: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be >= 1, got {height} x {width}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if not 0.0 < erasing_area[0] <= erasing_area[1] <= 1.0:
            raise ValueError(f"erasing_area must satisfy 0 < s_l <= s_h <= 1, got {erasing_area}")
        if not 0.0 < erasing_aspect[0] <= erasing_aspect[1]:
            raise ValueError(f"erasing_aspect must satisfy 0 < r_1 <= r_2, got {erasing_aspect}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if color_jitter:
            raise ValueError(
                "color_jitter is not implemented by BatchAugment; use the per-sample transforms "
                "(build_train_loader(batch_augment=False))"
            )
        self.height, self.width, self.pad = int(height), int(width), int(pad)
        self.flip_p = _probability("flip_p", flip_p)
        self.random_erasing_p = _probability("random_erasing_p", random_erasing_p)
        self.mean, self.std = _channels("mean", mean), _channels("std", std)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        self.erasing_area, self.erasing_aspect = erasing_area, erasing_aspect
        self.max_attempts = int(max_attempts)
        self.generator = generator

    # ------------------------------------------------------------------ random draws
    def _uniform(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """U[0, 1) float32 of ``shape`` on ``device``, from :attr:`generator` or the global one."""
        if self.generator is not None and self.generator.device.type != device.type:
            raise ValueError(f"the generator is on {self.generator.device}, the batch on {device}")
        return torch.rand(shape, generator=self.generator, device=device)

    def _integers(self, high: Tensor, device: torch.device) -> Tensor:
        """An integer uniform on {0, ..., high - 1} per entry of ``high`` (int64, >= 1)."""
        draw = (self._uniform(tuple(high.shape), device).double() * high).floor().long()
        return torch.minimum(draw, high - 1)  # guards U = 1 - 2^-24 rounding up

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> AugmentParams:
        """Draw the flip, crop offsets and erased box of ``batch_size`` images.

        Erasing draws ``max_attempts`` candidate boxes per image at once and keeps the first
        valid one: the same distribution as trying them one after another.
        """
        device = torch.device(device)
        height, width, area = self.height, self.width, self.height * self.width
        flip = self._uniform((batch_size,), device) < self.flip_p  # (B,)
        span = torch.full((batch_size,), 2 * self.pad + 1, dtype=torch.long, device=device)
        offset_y, offset_x = self._integers(span, device), self._integers(span, device)  # (B,)
        erase = self._uniform((batch_size,), device) < self.random_erasing_p  # (B,)
        shape = (batch_size, self.max_attempts)
        s_l, s_h = self.erasing_area
        r_1, r_2 = self.erasing_aspect
        target = (s_l + (s_h - s_l) * self._uniform(shape, device).double()) * area  # (B, A) S_e
        ratio = r_1 + (r_2 - r_1) * self._uniform(shape, device).double()  # (B, A) r_e
        box_h = torch.round(torch.sqrt(target * ratio)).long()  # (B, A); round half to even, as Python's round
        box_w = torch.round(torch.sqrt(target / ratio)).long()  # (B, A)
        box_area = box_h * box_w
        valid = (box_h > 0) & (box_h < height) & (box_w > 0) & (box_w < width)
        valid &= (s_l * area <= box_area) & (box_area <= s_h * area)  # (B, A)
        first = valid.long().argmax(dim=1, keepdim=True)  # (B, 1) first valid attempt (0 when none)
        erase &= valid.any(dim=1)
        box_h = torch.where(erase, box_h.gather(1, first).squeeze(1), 0)  # (B,)
        box_w = torch.where(erase, box_w.gather(1, first).squeeze(1), 0)  # (B,)
        box_top = torch.where(erase, self._integers(height - box_h + 1, device), 0)  # (B,)
        box_left = torch.where(erase, self._integers(width - box_w + 1, device), 0)  # (B,)
        return AugmentParams(flip, offset_y, offset_x, erase, box_top, box_left, box_h, box_w)

    # ------------------------------------------------------------------ application
    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Augment ``images`` with given random quantities.

        Args:
            images: (B, 3, H, W) uint8, on any device.
            params: from :meth:`sample`, on the same device.

        Returns:
            (B, 3, H, W) float32, normalised.
        """
        self._check(images)
        batch, _, height, width = images.shape
        device = images.device
        images = torch.where(params.flip.view(-1, 1, 1, 1), images.flip(3), images)  # (B, 3, H, W)
        if self.pad > 0:
            padded = F.pad(images, (self.pad, self.pad, self.pad, self.pad))  # (B, 3, H + 2p, W + 2p), zeros
            rows = params.offset_y.view(-1, 1) + torch.arange(height, device=device)  # (B, H) rows of padded
            cols = params.offset_x.view(-1, 1) + torch.arange(width, device=device)  # (B, W)
            index = torch.arange(batch, device=device).view(-1, 1, 1)  # (B, 1, 1)
            images = padded.permute(0, 2, 3, 1)[index, rows.view(batch, height, 1), cols.view(batch, 1, width)]
            images = images.permute(0, 3, 1, 2)  # (B, 3, H, W)
        out = images.float().mul_(1.0 / 255)  # (B, 3, H, W) in [0, 1], as torchvision's ToDtype(scale=True)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        y = torch.arange(height, device=device).view(1, height, 1)  # (1, H, 1)
        x = torch.arange(width, device=device).view(1, 1, width)  # (1, 1, W)
        top, left = params.box_top.view(-1, 1, 1), params.box_left.view(-1, 1, 1)  # (B, 1, 1)
        in_rows = (y >= top) & (y < top + params.box_height.view(-1, 1, 1))  # (B, H, 1)
        in_cols = (x >= left) & (x < left + params.box_width.view(-1, 1, 1))  # (B, 1, W)
        inside = in_rows & in_cols & params.erase.view(-1, 1, 1)  # (B, H, W)
        out = torch.where(inside.unsqueeze(1), mean, out)  # erased box = the mean, before normalising
        return (out - mean) / std  # (B, 3, H, W)

    def __call__(self, images: Tensor) -> Tensor:
        """Args: images (B, 3, H, W) uint8. Returns: (B, 3, H, W) float32, augmented and normalised."""
        self._check(images)
        return self.apply(images, self.sample(images.shape[0], images.device))

    def _check(self, images: Tensor) -> None:
        expected = (3, self.height, self.width)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"BatchAugment expects a uint8 (B, 3, {self.height}, {self.width}) batch, "
                f"got {images.dtype} {tuple(images.shape)}"
            )

    def __repr__(self) -> str:
        return (
            f"BatchAugment({self.height}x{self.width}, flip_p={self.flip_p}, pad={self.pad}, "
            f"random_erasing_p={self.random_erasing_p})"
        )


class AugmentedLoader:
    """A loader of uint8 batches whose images are moved to ``device`` and augmented there.

    Iterating yields ``(augment(images), *rest)`` for each ``(images, *rest)`` of ``loader``;
    ``len``, ``dataset``, ``sampler``, ``batch_sampler`` and ``batch_size`` are the wrapped
    loader's, so the trainer sets the sampler's epoch as for a plain ``DataLoader``.

    Args:
        loader: yields ``(images, pids, ...)`` with images (B, 3, H, W) uint8.
        augment: the :class:`BatchAugment`.
        device: where the augmentation runs (the training device).
    """

    def __init__(
        self, loader: Iterable[Sequence[Any]], augment: BatchAugment, device: torch.device | str = "cpu"
    ) -> None:
        self.loader = loader
        self.augment = augment
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for batch in self.loader:
            images = batch[0].to(self.device, non_blocking=True)  # (B, 3, H, W) uint8
            yield (self.augment(images), *batch[1:])

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def dataset(self) -> Any:
        return getattr(self.loader, "dataset", None)

    @property
    def sampler(self) -> Any:
        return getattr(self.loader, "sampler", None)

    @property
    def batch_sampler(self) -> Any:
        return getattr(self.loader, "batch_sampler", None)

    @property
    def batch_size(self) -> int | None:
        return getattr(self.loader, "batch_size", None)

    def __repr__(self) -> str:
        return f"AugmentedLoader({self.augment!r}, device={self.device})"


class NormalizingCollate:
    """A ``collate_fn`` that stacks uint8 images and normalises the whole batch at once.

    The test pipeline (resize, scale to [0, 1], normalise) run per image costs about a third of a
    small network's feature extraction on the CPU in Python overhead. With the images resized
    once when decoded (``ImageDataset(size=...)``, the same antialiased resize), this collate
    gives the same numbers: :math:`x' = (x / 255 - \\mu) / \\sigma`, computed as torchvision's
    ``ToDtype(scale=True)`` and ``Normalize`` do. It is a picklable object, so loader worker
    processes (and :func:`~reid_core.engine.distributed.extract_features_distributed`, which
    reuses a loader's ``collate_fn``) apply it too.

    Args:
        mean, std: per-channel mean and standard deviation of images scaled to [0, 1].

    Raises:
        ValueError: a mean or std without 3 values, or a non-positive std; (when called) images
            that are not a uint8 (B, 3, H, W) batch.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = _channels("mean", mean), _channels("std", std)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, samples: Sequence[Sequence[Any]]) -> list[Any]:
        """Args: samples, ``(image (3, H, W) uint8, pid, camid, index)`` each.

        Returns: the collated batch, its images (B, 3, H, W) float32 and normalised.
        """
        images, *rest = default_collate(samples)  # images (B, 3, H, W) uint8
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"NormalizingCollate expects uint8 (3, H, W) images, got {images.dtype} {tuple(images.shape[1:])}"
            )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        out = images.float().mul_(1.0 / 255)  # (B, 3, H, W) in [0, 1]
        return [(out - mean) / std, *rest]  # (B, 3, H, W)

    def __repr__(self) -> str:
        return f"NormalizingCollate(mean={self.mean}, std={self.std})"
