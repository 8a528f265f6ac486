"""Batched augmentation: the same pixels as the per-sample transform for the same random draws, the
same distribution of the draws over many batches, reproducible from a seed, and the loader option.

The distributions are compared on coordinate-coded images (red = row + 1, green = column + 1,
blue = 200): from an augmented image alone one can read back the flip, the crop offsets and
the erased box, so both pipelines are measured by the same code, not by what they report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as TF

from reid_core.data.batch_transforms import AugmentedLoader, AugmentParams, BatchAugment, NormalizingCollate
from reid_core.data.image_dataset import ImageDataset
from reid_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from reid_core.engine.loaders import build_test_loader, build_train_loader

HEIGHT, WIDTH, PAD = 64, 32, 10  # the synth profiles' input size and the baseline's padding
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
# Each comparison below is one hypothesis test at a fixed seed. Under the null (same
# distribution) a p-value below 1e-3 happens with probability 1e-3 per test, so the ~10 tests
# have about a 1% chance to fail for a correct implementation at a random seed; at the fixed seed
# the result is deterministic. The sensitivity test shows the same comparison rejects a mistake.
ALPHA = 1e-3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Thousands of small tensor ops: one thread is faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (batch, 3, HEIGHT, WIDTH), dtype=np.uint8))


def coordinate_image() -> torch.Tensor:
    """(3, H, W) uint8: red = row + 1, green = column + 1, blue = 200 (no pixel is 0 or the mean)."""
    rows = torch.arange(1, HEIGHT + 1, dtype=torch.uint8).view(HEIGHT, 1).expand(HEIGHT, WIDTH)
    cols = torch.arange(1, WIDTH + 1, dtype=torch.uint8).view(1, WIDTH).expand(HEIGHT, WIDTH)
    return torch.stack([rows, cols, torch.full((HEIGHT, WIDTH), 200, dtype=torch.uint8)])


def read_back(out: torch.Tensor) -> np.ndarray:
    """(N, 8) rows (flip, dy, dx, erased, top, left, h, w) of augmented coordinate images (N, 3, H, W)."""
    n = out.shape[0]
    erased = (out == 0).all(dim=1)  # (N, H, W): the mean, normalised, is exactly 0
    raw = torch.round((out * STD + MEAN) * 255).long()  # (N, 3, H, W) back to uint8 values
    valid = ~erased & (raw[:, 2] == 200)  # (N, H, W) neither erased nor zero padding
    i = torch.arange(HEIGHT).view(1, HEIGHT, 1)
    j = torch.arange(WIDTH).view(1, 1, WIDTH)

    def constant(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) the value over the valid pixels, and whether it is the same at all of them."""
        low = torch.where(valid, values, 10**6).amin(dim=(1, 2))
        return low, low == torch.where(valid, values, -(10**6)).amax(dim=(1, 2))

    dy, dy_ok = constant(raw[:, 0] - 1 - i + PAD)
    source_col = raw[:, 1] - 1
    dx_plain, plain_ok = constant(source_col - j + PAD)
    dx_mirrored, flip = constant((WIDTH - 1 - source_col) - j + PAD)
    assert dy_ok.all(), "rows do not come from one vertical offset"
    assert (plain_ok ^ flip).all(), "columns fit neither (or both) the plain and the mirrored image"
    dx = torch.where(flip, dx_mirrored, dx_plain)
    rows, cols = erased.any(dim=2), erased.any(dim=1)  # (N, H), (N, W)
    h, w = rows.sum(dim=1), cols.sum(dim=1)
    top, left = rows.long().argmax(dim=1) * (h > 0), cols.long().argmax(dim=1) * (w > 0)
    assert (erased.sum(dim=(1, 2)) == h * w).all(), "the erased pixels are not one rectangle"
    table = torch.stack([flip.long(), dy, dx, (h > 0).long(), top, left, h, w], dim=1)  # (N, 8)
    assert table.shape == (n, 8)
    return table.numpy()


def per_sample_draws(n: int, seed: int) -> np.ndarray:
    transform = build_transforms(HEIGHT, WIDTH, is_train=True, flip_p=0.5, pad=PAD, random_erasing_p=0.5)
    image = coordinate_image()
    torch.manual_seed(seed)
    return read_back(torch.stack([transform(image) for _ in range(n)]))


def batched_draws(n: int, seed: int, batch: int = 64, **kwargs: object) -> np.ndarray:
    augment = BatchAugment(HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed), **kwargs)
    images = coordinate_image().expand(batch, 3, HEIGHT, WIDTH)
    return read_back(torch.cat([augment(images) for _ in range(-(-n // batch))])[:n])


@pytest.fixture(scope="module")
def draws() -> tuple[np.ndarray, np.ndarray]:
    return per_sample_draws(4000, seed=1), batched_draws(4000, seed=2)


def contingency_p(a: np.ndarray, b: np.ndarray, values: range) -> float:
    """Chi-square test of homogeneity of two samples of a discrete variable over ``values``."""
    table = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    table = table[:, table.sum(axis=0) > 0]
    return float(stats.chi2_contingency(table).pvalue)


# ---------------------------------------------------------------- same pixels for the same draws
@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_deterministic_settings_equal_the_per_sample_transform(flip_p: float) -> None:
    batch = random_batch(5)
    per_sample = build_transforms(HEIGHT, WIDTH, is_train=True, flip_p=flip_p, pad=0, random_erasing_p=0.0)
    expected = torch.stack([per_sample(image) for image in batch])
    out = BatchAugment(HEIGHT, WIDTH, flip_p=flip_p, pad=0, random_erasing_p=0.0)(batch)
    assert out.dtype == torch.float32 and torch.equal(out, expected)


def test_apply_equals_torchvision_ops_with_the_drawn_parameters() -> None:
    augment = BatchAugment(HEIGHT, WIDTH, random_erasing_p=0.8, generator=torch.Generator().manual_seed(3))
    batch = random_batch(32, seed=1)
    params = augment.sample(32)
    assert params.flip.any() and not params.flip.all() and params.erase.any() and not params.erase.all()
    out = augment.apply(batch, params)
    for b in range(32):
        image = TF.horizontal_flip(batch[b]) if params.flip[b] else batch[b]
        image = TF.pad(image, [PAD], fill=0)
        image = TF.crop(image, int(params.offset_y[b]), int(params.offset_x[b]), HEIGHT, WIDTH)
        image = TF.to_dtype(image, torch.float32, scale=True)
        if params.erase[b]:
            t, left = int(params.box_top[b]), int(params.box_left[b])
            h, w = int(params.box_height[b]), int(params.box_width[b])
            image[:, t : t + h, left : left + w] = MEAN
        expected = TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))
        assert torch.equal(out[b], expected), f"image {b} differs"


def test_erased_boxes_obey_the_bounds() -> None:
    augment = BatchAugment(HEIGHT, WIDTH, random_erasing_p=1.0, generator=torch.Generator().manual_seed(0))
    params = augment.sample(5000)
    h, w = params.box_height[params.erase], params.box_width[params.erase]
    assert params.erase.float().mean() > 0.99  # 100 attempts almost never all fail at this size
    area = (h * w).double() / (HEIGHT * WIDTH)
    assert area.min() >= 0.02 and area.max() <= 0.4 and h.max() < HEIGHT and w.max() < WIDTH
    assert (params.box_top + params.box_height <= HEIGHT).all() and (params.box_left + params.box_width <= WIDTH).all()
    assert params.offset_y.min() == 0 and params.offset_y.max() == 2 * PAD


# ---------------------------------------------------------------- same distribution
def test_flip_crop_and_erasing_rates_match_the_per_sample_transform(draws) -> None:
    reference, batched = draws
    assert contingency_p(reference[:, 0], batched[:, 0], range(2)) > ALPHA  # flip
    assert contingency_p(reference[:, 1], batched[:, 1], range(2 * PAD + 1)) > ALPHA  # vertical offset
    assert contingency_p(reference[:, 2], batched[:, 2], range(2 * PAD + 1)) > ALPHA  # horizontal offset
    assert contingency_p(reference[:, 3], batched[:, 3], range(2)) > ALPHA  # erased or not
    assert abs(batched[:, 0].mean() - 0.5) < 0.03 and abs(batched[:, 3].mean() - 0.5) < 0.03  # 4 sigma of 4000 draws


def test_erased_box_distributions_match_the_per_sample_transform(draws) -> None:
    reference, batched = (d[d[:, 3] == 1] for d in draws)
    columns = {
        "area": lambda d: d[:, 6] * d[:, 7],
        "aspect": lambda d: d[:, 6] / d[:, 7],
        "top": lambda d: d[:, 4] / (HEIGHT - d[:, 6]),  # the position relative to the room left for the box
        "left": lambda d: d[:, 5] / (WIDTH - d[:, 7]),
    }
    for name, column in columns.items():
        p = stats.ks_2samp(column(reference), column(batched)).pvalue
        assert p > ALPHA, f"{name}: KS p = {p:.2e}"


def test_the_comparison_detects_a_wrong_aspect_range(draws) -> None:
    reference = draws[0][draws[0][:, 3] == 1]
    wrong = batched_draws(2000, seed=5, erasing_aspect=(0.5, 2.0))
    wrong = wrong[wrong[:, 3] == 1]
    assert stats.ks_2samp(reference[:, 6] / reference[:, 7], wrong[:, 6] / wrong[:, 7]).pvalue < 1e-6


# ---------------------------------------------------------------- reproducible
def test_same_seed_same_batch() -> None:
    batch = random_batch(16)

    def run(seed: int) -> torch.Tensor:
        return BatchAugment(HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))(batch)

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))
    torch.manual_seed(4)  # without a generator: the global one, as the per-sample transforms
    first = BatchAugment(HEIGHT, WIDTH)(batch)
    torch.manual_seed(4)
    assert torch.equal(BatchAugment(HEIGHT, WIDTH)(batch), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_pixels_for_the_same_draws() -> None:
    augment = BatchAugment(HEIGHT, WIDTH, generator=torch.Generator("cuda").manual_seed(0))
    batch = random_batch(32).cuda()
    params = augment.sample(32, "cuda")
    out = augment.apply(batch, params)
    assert out.is_cuda
    cpu_params = AugmentParams(*(getattr(params, f).cpu() for f in AugmentParams.__dataclass_fields__))
    torch.testing.assert_close(out.cpu(), augment.apply(batch.cpu(), cpu_params))
    first = BatchAugment(HEIGHT, WIDTH, generator=torch.Generator("cuda").manual_seed(5))(batch)
    second = BatchAugment(HEIGHT, WIDTH, generator=torch.Generator("cuda").manual_seed(5))(batch)
    assert torch.equal(first, second)


# ---------------------------------------------------------------- errors
def test_bad_input_is_named() -> None:
    augment = BatchAugment(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"uint8 \(B, 3, 64, 32\)"):
        augment(random_batch(2).float())
    with pytest.raises(ValueError, match=r"uint8 \(B, 3, 64, 32\)"):
        augment(random_batch(2)[:, :, :32])
    with pytest.raises(ValueError, match="color_jitter"):
        BatchAugment(HEIGHT, WIDTH, color_jitter=True)
    with pytest.raises(ValueError, match="flip_p"):
        BatchAugment(HEIGHT, WIDTH, flip_p=1.5)
    with pytest.raises(ValueError, match="pad"):
        BatchAugment(HEIGHT, WIDTH, pad=-1)
    with pytest.raises(ValueError, match="std"):
        BatchAugment(HEIGHT, WIDTH, std=(0.2, 0.0, 0.2))


# ---------------------------------------------------------------- the loader option
@pytest.fixture()
def items(tmp_path: Path) -> list[tuple[str, int, int]]:
    rng = np.random.default_rng(0)
    found = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (2 * HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)).save(path)
        found.append((str(path), i // 4, i % 3))
    return found


def test_dataset_size_resizes_once_like_the_transform(items) -> None:
    data = ImageDataset(items, preload=True, size=(HEIGHT, WIDTH))
    image = data[3][0]
    assert image.dtype == torch.uint8 and image.shape == (3, HEIGHT, WIDTH)
    assert data.preloaded is not None and data.preloaded[3].shape == (3, HEIGHT, WIDTH)  # resized at preload
    test_transform = build_transforms(HEIGHT, WIDTH, is_train=False)
    full_size = ImageDataset(items)[3][0]  # (3, 2H, 2W)
    assert torch.equal(test_transform(image), test_transform(full_size))
    with pytest.raises(ValueError, match="size"):
        ImageDataset(items, size=(HEIGHT, 0))


def test_train_loader_with_batch_augment(items) -> None:
    loader = build_train_loader(
        items, HEIGHT, WIDTH, batch_size=8, num_instances=2, preload=True, workers=0, batch_augment=True, device="cpu"
    )
    assert isinstance(loader, AugmentedLoader) and len(loader) == len(loader.loader)
    assert loader.sampler is loader.loader.sampler and loader.dataset.preloaded is not None

    def first_epoch(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        loader.sampler.set_epoch(0)
        return [batch[0] for batch in loader]

    batches = first_epoch(0)
    assert batches[0].dtype == torch.float32 and batches[0].shape == (8, 3, HEIGHT, WIDTH)
    assert all(torch.equal(a, b) for a, b in zip(batches, first_epoch(0)))
    assert not all(torch.equal(a, b) for a, b in zip(batches, first_epoch(1)))
    with pytest.raises(ValueError, match="color_jitter"):
        build_train_loader(
            items, HEIGHT, WIDTH, batch_size=8, num_instances=2, workers=0, batch_augment=True, color_jitter=True
        )


@pytest.mark.parametrize("preload", [False, True])
def test_test_loader_gives_the_per_image_test_transform_exactly(items, preload: bool) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loader = build_test_loader(items, HEIGHT, WIDTH, batch_size=5, preload=preload, workers=0, mean=mean, std=std)
    assert isinstance(loader.collate_fn, NormalizingCollate)
    images, pids, camids, indices = (torch.cat([torch.as_tensor(b[k]) for b in loader]) for k in range(4))
    per_image = build_transforms(HEIGHT, WIDTH, is_train=False, mean=mean, std=std)
    expected = torch.stack([per_image(ImageDataset(items)[i][0]) for i in range(len(items))])  # from full size
    assert images.dtype == torch.float32 and torch.equal(images, expected)  # (24, 3, H, W), bit for bit
    assert pids.tolist() == [p for _, p, _ in items] and camids.tolist() == [c for _, _, c in items]
    assert indices.tolist() == list(range(len(items)))
    with pytest.raises(ValueError, match="pad"):
        build_test_loader(items, HEIGHT, WIDTH, pad=4)  # a training keyword: named, not ignored
    with pytest.raises(ValueError, match="uint8"):
        NormalizingCollate()([(torch.zeros(3, 4, 2), 0, 0, 0)])
