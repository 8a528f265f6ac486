"""ResNet backbones for re-ID: torchvision ResNets with a configurable last stride.

Re-ID models keep more spatial resolution than ImageNet classifiers: setting the stride of
the last stage (``layer4``) to 1 doubles the height and width of the final map (a 256x128
input gives 16x8 instead of 8x4), which helps both global pooling and part/stripe models
(Sun et al. 2018, PCB; Luo et al. 2019, "Bag of Tricks"). Chapters: every notebook; see
``notebooks/01_reid_basics.py`` for the baseline that uses it.

Example:
    >>> net = build_backbone("resnet18", last_stride=1)
    >>> net(torch.zeros(2, 3, 128, 64)).shape
    torch.Size([2, 512, 8, 4])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision import models as tvm

__all__ = ["ResNetBackbone", "StemMaxPool", "build_backbone", "BACKBONES", "STAGES"]


# name -> (torchvision constructor, ImageNet weights enum, channels of layer1..layer4)
def _resnet10(weights: object = None) -> tvm.ResNet:
    """ResNet-10: torchvision's ResNet with one BasicBlock per stage (no ImageNet weights exist).

    Half of ResNet-18's compute; the CPU profiles of the book use it to train from scratch in
    minutes. It is not a paper's backbone.
    """
    return tvm.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1])


BACKBONES: dict[str, tuple[Callable[..., tvm.ResNet], object, tuple[int, int, int, int]]] = {
    "resnet10": (_resnet10, None, (64, 128, 256, 512)),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, (64, 128, 256, 512)),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, (64, 128, 256, 512)),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
}
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


class StemMaxPool(nn.MaxPool2d):
    """The stem's 3x3 stride-2 max pool, run on a channels-last copy on the CPU.

    On the CPU, PyTorch's max pool over a contiguous (B, C, H, W) map is about ten times slower
    than over the same map in channels-last layout (68 ms against 7 ms for 256 x 64 x 32 x 16 on
    one thread), a fifth of a ResNet-10's forward pass at 64x32. A maximum does not depend on the
    memory layout, so the output is the same numbers; it comes back contiguous. On other devices,
    and while exporting to ONNX, it is the plain ``nn.MaxPool2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, C, H, W). Returns: (B, C, H', W') contiguous, the max over each window."""
        if x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        pooled = super().forward(x.contiguous(memory_format=torch.channels_last))  # (B, C, H', W') channels-last
        return pooled.contiguous()  # (B, C, H', W')


def _set_last_stride(layer4: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of ``layer4`` (its conv and its shortcut)."""
    block = layer4[0]
    # BasicBlock strides conv1, Bottleneck (torchvision v1.5) strides conv2.
    conv = block.conv2 if isinstance(block, tvm.resnet.Bottleneck) else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    Args:
        name: one of :data:`BACKBONES`.
        pretrained: load ImageNet weights (downloads them once; needs internet).
        last_stride: stride of ``layer4`` (1 for re-ID, 2 as in ImageNet ResNets).

    Attributes:
        stem, layer1, layer2, layer3, layer4: the stages, usable on their own
            (EnsembleNet splits ``layer4``; QAConv stops after ``layer3``).
        stage_channels: channels after layer1..layer4.
        out_channels: channels of the final map.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = False, last_stride: int = 1) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        ctor, weights, channels = BACKBONES[name]
        net = ctor(weights=None)
        if pretrained and weights is None:
            raise ValueError(
                f"{name} has no ImageNet weights; use pretrained=False or one of "
                f"{sorted(k for k, v in BACKBONES.items() if v[1] is not None)}"
            )
        if pretrained:
            net.load_state_dict(_load_imagenet_state(name, weights))
        _set_last_stride(net.layer4, last_stride)
        self.name = name
        pool = net.maxpool
        stem_pool = StemMaxPool(pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, stem_pool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = channels
        self.out_channels = channels[-1]

    def forward(self, x: Tensor, upto: str = "layer4") -> Tensor:
        """Run the stages up to and including ``upto``.

        Args:
            x: (B, 3, H, W) normalised images.
            upto: last stage to run, one of :data:`STAGES`.

        Returns:
            (B, C, H/s, W/s) map; s = 16 after layer3, 16 or 32 after layer4.
        """
        if upto not in STAGES:
            raise ValueError(f"upto must be one of {STAGES}, got {upto!r}")
        for stage in STAGES:
            x = getattr(self, stage)(x)
            if stage == upto:
                break
        return x


def _load_imagenet_state(name: str, weights: object) -> dict[str, Tensor]:
    """Download (or read from the torch hub cache) ImageNet weights, with an error that says what to do.

    A cached file that cannot be read (a download cut short, a disk error) is named, to be
    deleted; without a cached file the machine is taken to be offline.
    """
    url = weights.url  # type: ignore[attr-defined]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    was_cached = cached.is_file()
    try:
        return weights.get_state_dict(progress=True, check_hash=True)  # type: ignore[attr-defined]
    except Exception as err:  # URLError (an OSError), a bad zip or pickle, a hash mismatch
        if was_cached:
            raise RuntimeError(
                f"pretrained=True for {name}: the cached ImageNet weights '{cached}' cannot be read "
                f"({type(err).__name__}: {err}). The file is damaged (an interrupted download?): delete it, and "
                f"the next run downloads it again from {url}."
            ) from err
        raise RuntimeError(
            f"pretrained=True for {name}: could not get the ImageNet weights from {url} "
            f"({type(err).__name__}: {err}). This machine looks offline. Either download that file "
            f"into {cached.parent}/ on a machine with internet, or pass pretrained=False."
        ) from err


def build_backbone(name: str = "resnet50", pretrained: bool = False, last_stride: int = 1) -> ResNetBackbone:
    """Build a :class:`ResNetBackbone`; see that class for the arguments."""
    return ResNetBackbone(name, pretrained=pretrained, last_stride=last_stride)
