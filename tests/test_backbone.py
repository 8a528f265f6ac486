"""Tests for reid_core.models.backbone: stage shapes, last stride, errors, offline weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from reid_core.models.backbone import STAGES, StemMaxPool, build_backbone

# Channels after stem, layer1..layer4, from the ResNet paper (He et al. 2016, Table 1):
# BasicBlock nets keep 64..512, Bottleneck nets expand by 4.
EXPECTED_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}
# Total downsampling after each stage: stem (conv stride 2 + maxpool 2) = 4, layer1 = 4,
# layer2 = 8, layer3 = 16, layer4 = 16 * last_stride.
STAGE_STRIDES = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_stage_shapes(name: str, last_stride: int) -> None:
    net = build_backbone(name, last_stride=last_stride).eval()
    x = torch.randn(2, 3, 64, 32)
    strides = {**STAGE_STRIDES, "layer4": 16 * last_stride}
    with torch.no_grad():
        for stage, channels in zip(STAGES, EXPECTED_CHANNELS[name]):
            out = net(x, upto=stage)
            s = strides[stage]
            assert out.shape == (2, channels, 64 // s, 32 // s), (name, stage)
    assert net.stage_channels == EXPECTED_CHANNELS[name][1:]
    assert net.out_channels == EXPECTED_CHANNELS[name][-1]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_last_stride_one_removes_every_stride_of_layer4(name: str) -> None:
    net = build_backbone(name, last_stride=1)
    strides = [m.stride for m in net.layer4.modules() if isinstance(m, nn.Conv2d)]
    assert strides and all(s == (1, 1) for s in strides)
    # The other stages keep their ImageNet strides.
    assert net.layer3[0].downsample[0].stride == (2, 2)


def test_last_stride_two_is_the_torchvision_resnet() -> None:
    torch.manual_seed(0)
    ours = build_backbone("resnet18", last_stride=2).eval()
    ref = tvm.resnet18(weights=None).eval()
    ref.conv1.load_state_dict(ours.stem[0].state_dict())
    ref.bn1.load_state_dict(ours.stem[1].state_dict())
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        getattr(ref, stage).load_state_dict(getattr(ours, stage).state_dict())
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        stem = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(stem))))
        torch.testing.assert_close(ours(x), expected)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'.*resnet18"):
        build_backbone("resnet9")
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("resnet18", last_stride=3)
    net = build_backbone("resnet18")
    with pytest.raises(ValueError, match="upto"):
        net(torch.zeros(1, 3, 32, 16), upto="layer5")


def test_pretrained_offline_error_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # An empty hub cache and a download that fails as it does with no network.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert "resnet18" in message
    assert "pretrained=False" in message
    assert "offline" in message
    assert str(tmp_path) in message
    assert tvm.ResNet18_Weights.IMAGENET1K_V1.url in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_resnet10_is_one_block_per_stage_and_has_no_weights() -> None:
    net = build_backbone("resnet10", last_stride=1)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert net(torch.zeros(1, 3, 64, 32)).shape == (1, 512, 4, 2)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_backbone("resnet10", pretrained=True)


def test_stem_max_pool_gives_the_plain_max_pool_and_its_gradient() -> None:
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 8, 33, 17))  # (B, C, H, W), many zeros: ties inside the windows
    x[0, 0, :4, :4] = 1.0  # a window of equal values
    plain, ours = nn.MaxPool2d(3, 2, 1), StemMaxPool(3, 2, 1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_plain, out_ours = plain(a), ours(b)  # (4, 8, 17, 9)
    assert out_ours.is_contiguous() and torch.equal(out_plain, out_ours)
    weights = torch.randn_like(out_plain)
    (out_plain * weights).sum().backward()
    (out_ours * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)
    assert isinstance(build_backbone("resnet10").stem[3], StemMaxPool)
