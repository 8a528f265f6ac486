"""Precision settings: the default float32 CPU path is bit-for-bit what it was, and bfloat16 runs the
network in bfloat16 while giving features close to float32's."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.engine.features import extract_features
from reid_core.engine.precision import autocast_dtype
from reid_core.engine.trainer import TrainConfig, Trainer, seed_everything
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small networks: one thread is much faster than two on a busy 2-core machine; the bits compared
    below are all computed at the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_autocast_dtype_table() -> None:
    assert autocast_dtype("auto", "cpu") is None  # float32 on the CPU, as before
    assert autocast_dtype("auto", "cuda") == torch.float16 and autocast_dtype("auto", "cuda", amp=False) is None
    assert autocast_dtype("fp32", "cuda") is None and autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16 == autocast_dtype("bf16", "cuda")
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


def _data(n: int = 32, classes: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 32, 16, generator=generator)
    labels = torch.arange(n) % classes
    return DataLoader(TensorDataset(images, labels, torch.arange(n) % 2), batch_size=16)


def _config(**kwargs: object) -> TrainConfig:
    return TrainConfig(epochs=1, lr=1e-3, warmup_epochs=0, scheduler="constant", progress=False, seed=5, **kwargs)


def _trained(precision: str | None) -> nn.Module:
    seed_everything(5)
    model = BaselineNet(4, backbone="resnet10", last_stride=1)
    config = _config() if precision is None else _config(precision=precision)
    Trainer(model, BaselineLoss(), _data(), config, device="cpu").fit()
    return model


def _reference_training() -> nn.Module:
    """The trainer's float32 CPU step written out: forward, summed loss terms, backward, fused Adam."""
    seed_everything(5)
    model = BaselineNet(4, backbone="resnet10", last_stride=1)
    criterion = BaselineLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4, fused=True)
    seed_everything(5)  # Trainer.fit seeds again before the first batch
    model.train()
    for images, labels, _ in _data():
        loss = sum(term.float() for term in criterion(model(images), labels).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_default_cpu_training_is_the_float32_step_bit_for_bit() -> None:
    default = _trained(None)
    assert _same_weights(default, _reference_training())
    assert _same_weights(default, _trained("fp32"))


def test_bf16_training_runs_convolutions_in_bfloat16() -> None:
    seen: list[torch.dtype] = []
    seed_everything(5)
    model = BaselineNet(4, backbone="resnet10", last_stride=1)
    model.backbone.stem[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer = Trainer(model, BaselineLoss(), _data(), _config(precision="bf16"), device="cpu")
    assert not trainer.use_amp  # no gradient scaler for bfloat16
    history = trainer.fit()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
    assert not _same_weights(model, _trained("fp32"))


def _features_by_hand(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    """Flip-averaged float32 features, the way extract_features computed them before precision existed."""
    model.eval()
    with torch.no_grad():
        out = []
        for images, _, _ in loader:
            plain, mirrored = model(images).feat, model(torch.flip(images, dims=[3])).feat
            out.append((plain.float() + mirrored.float()) / 2)
    return torch.cat(out)


def test_features_default_is_float32_bit_for_bit_and_bf16_is_close() -> None:
    model, loader = _trained(None), _data()
    default = extract_features(model, loader, progress=False).features
    assert torch.equal(default, _features_by_hand(model, loader))
    assert torch.equal(default, extract_features(model, loader, precision="fp32", progress=False).features)
    bf16 = extract_features(model, loader, precision="bf16", progress=False).features
    assert bf16.dtype == torch.float32 and bf16.shape == default.shape
    # bfloat16 keeps 8 significant bits: each layer's inputs are rounded with a relative error of
    # at most 2^-9 (0.2 %). ResNet-10 has about 12 such layers; if the errors added up in the same
    # direction the feature would be off by 12 x 2^-9 = 2.3 %; we allow 5 %, and require some
    # difference (else the bfloat16 path did not run).
    relative = (bf16 - default).norm(dim=1) / default.norm(dim=1)  # (N,)
    assert relative.max() < 0.05 and relative.mean() > 1e-4
