"""Trainer, schedules, checkpoints and feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reid_core.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reid_core.engine.features import extract_features
from reid_core.engine.schedules import AdaptiveLossStep, build_lr_schedule
from reid_core.engine.trainer import TrainConfig, Trainer
from reid_core.models.outputs import ReIDOutput


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_roundtrip_and_atomic(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3, "history": [{"loss": 1.5}]}
    path = save_checkpoint(state, tmp_path / "sub" / "last.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left behind
    back = load_checkpoint(path)
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 3 and back["history"] == [{"loss": 1.5}]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "truncated.pt"
    save_checkpoint({"w": torch.zeros(100)}, bad)
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(bad)
    evil = tmp_path / "object.pt"
    torch.save({"obj": np.random.RandomState(0)}, evil)  # a pickled object: refused by weights_only
    with pytest.raises(CheckpointError, match="object.pt"):
        load_checkpoint(evil)


# -------------------------------------------------------------------- schedules
def test_warmup_then_step():
    f = build_lr_schedule("step", epochs=120, milestones=(40, 70), gamma=0.1, warmup_epochs=10, warmup_factor=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == 1.0 and f(39.9) == 1.0
    assert f(40) == pytest.approx(0.1) and f(70) == pytest.approx(0.01)


def test_exp_schedule_matches_formula():
    T, t0 = 300, 151
    f = build_lr_schedule("exp", epochs=T, decay_start=t0)
    assert f(150) == 1.0
    for e in (151, 200, 299):
        assert f(e) == pytest.approx(0.001 ** ((e + 1 - t0) / (T + 1 - t0)))


def test_cosine_schedule():
    f = build_lr_schedule("cosine", epochs=10)
    assert f(0) == pytest.approx(1.0) and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="valid names"):
        build_lr_schedule("linear", epochs=3)


class _FakeTrainer:
    stop_training = False
    lr_scale = 1.0


def test_adaptive_loss_step():
    cb, tr = AdaptiveLossStep(max_epochs=60), _FakeTrainer()
    losses = [10.0, 8.0, 7.0, 6.0, 5.5]  # 5.5 < 0.7 * 8 at epoch 5 -> final = 5 + 2 = 7
    for e, loss in enumerate(losses):
        cb.on_epoch_end(tr, e, {"loss": loss})
    assert cb.base_loss == 8.0 and cb.step_epoch == 5 and cb.final_epochs == 7 and tr.lr_scale == 0.1
    assert not tr.stop_training
    cb.on_epoch_end(tr, 5, {"loss": 5.0})
    cb.on_epoch_end(tr, 6, {"loss": 5.0})
    assert tr.stop_training


# ---------------------------------------------------------------------- trainer
class _TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
        self.cls = nn.Linear(8, classes)

    def forward(self, x):
        f = self.body(x)
        return ReIDOutput(feat=f, logits=self.cls(f))


def _loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(24) % 3
    x = torch.randn(24, 3, 2, 2, generator=g) + y.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(x, y, torch.zeros(24, dtype=torch.long)), batch_size=8, shuffle=False)


def _ce(out, labels):
    return {"id": nn.functional.cross_entropy(out.logits, labels)}


def _cfg(**kw):
    base = dict(epochs=4, lr=0.05, optimizer="sgd", scheduler="constant", warmup_epochs=0, progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_learns_and_logs():
    torch.manual_seed(0)
    trainer = Trainer(_TinyNet(), _ce, _loader(), _cfg(epochs=15), device="cpu")
    hist = trainer.fit()
    assert len(hist) == 15 and hist[-1]["id"] < hist[0]["id"] * 0.5
    assert hist[0]["images"] == 24 and hist[0]["loss"] == pytest.approx(hist[0]["id"])


def test_trainer_optimises_criterion_parameters():
    head = nn.Linear(8, 3)
    before = head.weight.detach().clone()

    class Crit(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, out, labels):
            return {"id": nn.functional.cross_entropy(self.head(out.feat), labels)}

    Trainer(_TinyNet(), Crit(), _loader(), _cfg(epochs=1), device="cpu").fit()
    assert not torch.equal(before, head.weight.detach())


def test_trainer_resume_equals_straight_run(tmp_path):
    torch.manual_seed(0)
    init = _TinyNet().state_dict()
    straight = _TinyNet()
    straight.load_state_dict(init)
    Trainer(straight, _ce, _loader(), _cfg(epochs=4, optimizer="adam", lr=0.01), device="cpu").fit()

    first = _TinyNet()
    first.load_state_dict(init)
    Trainer(
        first, _ce, _loader(), _cfg(epochs=2, optimizer="adam", lr=0.01, checkpoint_dir=str(tmp_path)), device="cpu"
    ).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    resumed = _TinyNet()  # different init: everything must come from the checkpoint
    trainer = Trainer(
        resumed, _ce, _loader(), _cfg(epochs=4, optimizer="adam", lr=0.01, checkpoint_dir=str(tmp_path)), device="cpu"
    )
    hist = trainer.fit()
    assert len(hist) == 4
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)


def test_trainer_callbacks_and_stop():
    calls = []

    class CB:
        def on_epoch_start(self, trainer, epoch):
            calls.append(("start", epoch))

        def on_epoch_end(self, trainer, epoch, stats):
            calls.append(("end", epoch))
            if epoch == 1:
                trainer.stop_training = True

    hist = Trainer(_TinyNet(), _ce, _loader(), _cfg(epochs=10), device="cpu", callbacks=[CB()]).fit()
    assert len(hist) == 2 and calls == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]


def test_trainer_lr_follows_schedule_and_groups():
    net = _TinyNet()
    groups = [{"params": net.body.parameters(), "lr_mult": 0.1}, {"params": net.cls.parameters()}]
    cfg = _cfg(epochs=2, scheduler="step", milestones=(1,), gamma=0.5)
    trainer = Trainer(net, _ce, _loader(), cfg, device="cpu", param_groups=groups)
    trainer.fit()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs == pytest.approx([0.05 * 0.1 * 0.5, 0.05 * 0.5])


def test_trainer_rejects_nonfinite_loss():
    def bad(out, labels):
        return {"id": out.logits.sum() * float("nan")}

    with pytest.raises(FloatingPointError, match="non-finite"):
        Trainer(_TinyNet(), bad, _loader(), _cfg(epochs=1), device="cpu").fit()


# ------------------------------------------------------------ feature extraction
class _LeftHalf(nn.Module):
    """feat = mean of the left half of the image per channel; a map = the image itself."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        w = x.shape[3]
        return ReIDOutput(feat=x[..., : w // 2].mean(dim=(2, 3)), feature_map=x + 0 * self.dummy)


def test_extract_features_flip_average():
    x = torch.rand(5, 3, 4, 6)
    loader = DataLoader(TensorDataset(x, torch.arange(5), torch.zeros(5, dtype=torch.long)), batch_size=2)
    out = extract_features(_LeftHalf(), loader, "cpu", flip=True, progress=False)
    expected = (x[..., :3].mean(dim=(2, 3)) + x[..., 3:].mean(dim=(2, 3))) / 2
    torch.testing.assert_close(out.features, expected)
    assert out.pids.tolist() == [0, 1, 2, 3, 4]
    maps = extract_features(_LeftHalf(), loader, "cpu", field="feature_map", flip=True, progress=False)
    torch.testing.assert_close(maps.features, x)  # the mirrored map is flipped back before averaging
    normed = extract_features(_LeftHalf(), loader, "cpu", flip=False, normalize=True, progress=False)
    torch.testing.assert_close(normed.features.norm(dim=1), torch.ones(5))
    with pytest.raises(ValueError, match="local"):
        extract_features(_LeftHalf(), loader, "cpu", field="local", progress=False)


def test_eval_mode_restores_each_submodule():
    from reid_core.modes import eval_mode

    net = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3))
    net.train()
    net[0].eval()  # a frozen-BN backbone inside a training model
    with eval_mode(net, "not a module"):
        assert not net.training and not net[1].training
    assert net.training and net[1].training and not net[0].training
    x = torch.rand(4, 3, 2, 2)
    loader = DataLoader(TensorDataset(x, torch.arange(4), torch.zeros(4, dtype=torch.long)), batch_size=2)
    model = _LeftHalf()
    model.train()
    extract_features(model, loader, "cpu", progress=False)
    assert model.training


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_trainer_uses_the_fused_optimizer_and_it_steps_like_the_loop(name: str) -> None:
    trainer = Trainer(_TinyNet(), _ce, _loader(), _cfg(epochs=1, optimizer=name, lr=0.01), device="cpu")
    assert trainer.optimizer.defaults["fused"] is True
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    fused = kind(params, lr=0.01, weight_decay=5e-4, fused=True, **extra)
    loop = kind(twins, lr=0.01, weight_decay=5e-4, foreach=False, **extra)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
