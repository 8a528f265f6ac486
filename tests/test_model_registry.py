"""Every registered model: forward in train and eval mode, backward, and its feature shapes."""

from __future__ import annotations

import pytest
import torch

from reid_core.models import MODELS, ReIDOutput, build_model

NUM_CLASSES = 5
KWARGS = {"qaconv": dict(height=64, width=32)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_and_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, backbone="resnet18", **KWARGS.get(name, {}))
    x = torch.randn(4, 3, 64, 32)
    out = model(x)
    assert isinstance(out, ReIDOutput) and out.feat.shape[0] == 4 and out.feat.dim() == 2
    logits = out.logits if isinstance(out.logits, list) else [out.logits] if out.logits is not None else []
    for lg in logits:
        assert lg.shape == (4, NUM_CLASSES)
    loss = out.feat.pow(2).mean() + sum(lg.logsumexp(1).mean() for lg in logits)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached the parameters"
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert type(ev) is type(out) and ev.feat.shape == out.feat.shape
    for field in ("logits", "local", "feature_map", "parts", "global_feat"):
        assert (getattr(ev, field) is None) == (getattr(out, field) is None), (
            f"{name}: {field} differs between train and eval"
        )


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="valid names"):
        build_model("resnet", 3)
