r"""QAConv: image matching by local correspondences in feature maps (Liao & Shao, ECCV 2020).

Instead of one global vector per image, QAConv compares two *feature maps* position by
position and keeps the best match of every position. As used with Graph Sampling (the
"QAConv 2.1" code of Liao & Shao, CVPR 2022, arXiv 2104.01546):

* **Features** (:class:`QAConvNet`): a ResNet cut after ``layer3`` (stride 16: 384x128 in,
  24x8 out), a 3x3 conv "neck" (padding 1) to d = 128 channels, and L2 normalisation of the
  d-vector at every position.
* **Matcher** (:class:`QAConv`): for probe map P and gallery map G with hw positions each,

  .. math::
      s_{sr} = \langle P_s, G_r \rangle, \qquad
      a_s = \max_r s_{sr}, \qquad b_r = \max_s s_{sr},

  then each hw-vector goes through the *same* BatchNorm1d(1) and FC(hw -> 1) (weights
  initialised to 1/hw), the two outputs are summed and a last BatchNorm1d(1) gives the score
  (a logit; higher = more similar):

  .. math::
      \text{score}(P, G) = \mathrm{BN}_2\big(\mathrm{FC}(\mathrm{BN}_1(a)) + \mathrm{FC}(\mathrm{BN}_1(b))\big).

  The distance for retrieval is :math:`-\text{score}`.

**Symmetry.** Swapping probe and gallery transposes :math:`s`, which swaps :math:`a` and
:math:`b`. Because both directions share BN_1 and FC and are summed, ``score(P, G) ==
score(G, P)`` exactly: in eval mode, and in train mode too, since the batch statistics of
BN_1 and BN_2 are taken over the same set of values. ``pairwise(x)`` is therefore a symmetric
matrix. (QAConv 1.0 concatenated ``[a; b]`` into one FC(2hw -> 1), which is symmetric only when
both halves of its weight are equal.)

Chapter: ``notebooks/05_graph_sampling.py``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from reid_core.models.backbone import build_backbone
from reid_core.models.outputs import ReIDOutput
from reid_core.modes import eval_mode

__all__ = ["QAConv", "QAConvNet", "feature_map_size"]

_BACKBONE_STRIDE_AT_LAYER3 = 4  # stem conv, stem max-pool, layer2, layer3 each halve the size


def feature_map_size(height: int, width: int) -> tuple[int, int]:
    """Size of the ``layer3`` map of a ResNet for a ``height`` x ``width`` input.

    Each of the four stride-2 steps (stem conv, max pool, layer2, layer3; all padded) maps a
    side n to ceil(n / 2), so 384x128 gives 24x8.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    h, w = height, width
    for _ in range(_BACKBONE_STRIDE_AT_LAYER3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


class QAConvNet(nn.Module):
    """ResNet up to ``layer3`` + 3x3 conv neck + per-position L2 normalisation.

    Args:
        num_classes: if given, adds an identity classifier on the average-pooled normalised
            map (``logits``). Not part of QAConv (whose losses need no classifier); it lets the
            model share a constructor signature with the other models. ``None``: no logits.
        backbone: ResNet name for :func:`reid_core.models.backbone.build_backbone`.
        pretrained: ImageNet weights for the backbone. (QAConv 1.1+ uses IBN-Net-b; this
            library builds plain torchvision ResNets.)
        neck_dim: d, channels after the neck (128 in the QAConv 2.1 code, 64 in 2.0).
        height: input image height (384 in the paper), used for the map size.
        width: input image width (128 in the paper).

    Attributes:
        map_height, map_width: h, w of the feature map for ``height`` x ``width`` inputs.
        num_features: d.

    ``forward`` returns the same :class:`~reid_core.models.outputs.ReIDOutput` in train and
    eval mode: ``feature_map`` (B, d, h, w) is the normalised map, ``feat`` (B, d*h*w) is the
    same map flattened (so any code that stores ``feat`` can hand it to :class:`QAConv`,
    which accepts flattened maps), ``logits`` as above.

    Example:
        >>> net = QAConvNet(backbone="resnet18", height=64, width=32)
        >>> out = net(torch.zeros(2, 3, 64, 32))
        >>> out.feature_map.shape, out.feat.shape
        (torch.Size([2, 128, 4, 2]), torch.Size([2, 1024]))
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        pretrained: bool = False,
        neck_dim: int = 128,
        height: int = 384,
        width: int = 128,
    ) -> None:
        super().__init__()
        if neck_dim < 1:
            raise ValueError(f"neck_dim must be >= 1, got {neck_dim}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.backbone = build_backbone(backbone, pretrained=pretrained, last_stride=1)
        # QAConv stops after layer3; drop layer4 so its ~15M parameters are neither stored in
        # the optimiser nor reported as unused.
        self.backbone.layer4 = nn.Identity()
        in_channels = self.backbone.stage_channels[2]
        self.neck = nn.Conv2d(in_channels, neck_dim, kernel_size=3, padding=1)
        self.classifier = None if num_classes is None else nn.Linear(neck_dim, num_classes)
        self.num_features = neck_dim
        self.map_height, self.map_width = feature_map_size(height, width)

    def make_matcher(self) -> QAConv:
        """A :class:`QAConv` matcher sized for this network's maps."""
        return QAConv(self.num_features, self.map_height, self.map_width)

    def forward(self, images: Tensor) -> ReIDOutput:
        """Args: images (B, 3, H, W). Returns: ReIDOutput(feat (B, d*h*w), feature_map (B, d, h, w), logits)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        fmap = self.backbone(images, upto="layer3")  # (B, 1024, h, w) for ResNet-50
        fmap = F.normalize(self.neck(fmap), dim=1)  # (B, d, h, w) unit vector per position
        logits = None if self.classifier is None else self.classifier(fmap.mean(dim=(2, 3)))  # (B, C)
        return ReIDOutput(feat=fmap.flatten(1), logits=logits, feature_map=fmap)


class QAConv(nn.Module):
    """The QAConv 2.1 matcher: all-pairs scores between probe and gallery feature maps.

    Args:
        num_features: d, channels of the maps.
        height: h of the maps.
        width: w of the maps.

    Inputs may be maps (N, d, h, w) or the same maps flattened to (N, d*h*w).

    Example:
        >>> matcher = QAConv(num_features=8, height=4, width=2).eval()
        >>> x = F.normalize(torch.randn(5, 8, 4, 2), dim=1)
        >>> matcher(x[:2], x).shape
        torch.Size([2, 5])
    """

    def __init__(self, num_features: int, height: int, width: int) -> None:
        super().__init__()
        if num_features < 1 or height < 1 or width < 1:
            raise ValueError(f"num_features, height, width must be >= 1, got {num_features}, {height}, {width}")
        self.num_features, self.height, self.width = num_features, height, width
        hw = height * width
        self.bn = nn.BatchNorm1d(1)  # shared by both directions
        self.fc = nn.Linear(hw, 1)  # shared by both directions
        self.logit_bn = nn.BatchNorm1d(1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FC weights 1/hw (an average of the best-match similarities), bias 0, fresh BNs."""
        self.bn.reset_parameters()
        self.logit_bn.reset_parameters()
        with torch.no_grad():
            self.fc.weight.fill_(1.0 / (self.height * self.width))
            self.fc.bias.zero_()  # any constant is removed by logit_bn anyway

    def _positions(self, x: Tensor, name: str) -> Tensor:
        """(N, d, h, w) or (N, d*h*w) -> (N, hw, d)."""
        d, h, w = self.num_features, self.height, self.width
        if x.dim() == 2 and x.shape[1] == d * h * w:
            x = x.view(x.shape[0], d, h, w)
        if x.dim() != 4 or tuple(x.shape[1:]) != (d, h, w):
            raise ValueError(
                f"{name} must be (N, {d}, {h}, {w}) maps or (N, {d * h * w}) flattened maps, got {tuple(x.shape)}"
            )
        return x.flatten(2).transpose(1, 2)  # (N, hw, d)

    def forward(self, probe: Tensor, gallery: Tensor) -> Tensor:
        """Scores of every probe against every gallery map.

        Materialises a (P, G, hw, hw) similarity tensor: meant for training batches; use
        :meth:`match_all` for large sets.

        Args:
            probe: (P, d, h, w) or (P, d*h*w).
            gallery: (G, d, h, w) or (G, d*h*w).

        Returns:
            (P, G) scores (logits; higher = more similar).
        """
        p = self._positions(probe, "probe")  # (P, hw, d)
        g = self._positions(gallery, "gallery")  # (G, hw, d)
        num_p, num_g, hw = p.shape[0], g.shape[0], p.shape[1]
        sim = torch.einsum("psd,grd->psgr", p, g)  # (P, hw_s, G, hw_r)
        best_for_probe = sim.amax(dim=3).transpose(1, 2)  # (P, G, hw_s): a_s = max_r s_sr
        best_for_gallery = sim.amax(dim=1)  # (P, G, hw_r): b_r = max_s s_sr
        both = torch.stack((best_for_probe, best_for_gallery), dim=2)  # (P, G, 2, hw)
        both = self.bn(both.reshape(-1, 1, hw)).view(-1, hw)  # (P*G*2, hw)
        score = self.fc(both).view(num_p * num_g, 2).sum(dim=1, keepdim=True)  # (P*G, 1)
        return self.logit_bn(score).view(num_p, num_g)  # (P, G)

    def pairwise(self, x: Tensor) -> Tensor:
        """(B, B) scores within a batch: ``forward(x, x)`` (symmetric, see the module doc)."""
        return self(x, x)

    @torch.no_grad()
    def match_all(
        self,
        probe: Tensor,
        gallery: Tensor,
        chunk: int | None = None,
        out_device: torch.device | str | None = None,
        progress: bool = True,
    ) -> Tensor:
        """All-pairs scores for evaluation, ``chunk`` x ``chunk`` pairs at a time.

        Always uses the BN running statistics (the module is put in eval mode and its mode
        restored afterwards), so the result does not depend on the chunk size. Peak extra
        memory is one (chunk, hw, chunk, hw) block plus the (P, G) result: a 20,000-image
        gallery never builds the P x G x hw x hw tensor. On CUDA the blocks run under fp16
        autocast, as the paper's code evaluates in half precision.

        Args:
            probe: (P, d, h, w) or (P, d*h*w), on any device (blocks move to the device of
                this module's parameters).
            gallery: (G, d, h, w) or (G, d*h*w).
            chunk: probes (and gallery maps) per block; ``None``: 128 on CUDA (a block of about
                1.4 GiB at 24x8 positions, already as fast as larger ones on an H100), 32 on CPU
                (about 150 MB in fp32).
            out_device: where the (P, G) result lives; default: the module's device.
            progress: show a tqdm bar over probe blocks.

        Returns:
            (P, G) float32 scores; the retrieval distance is ``-scores``.
        """
        device = self.fc.weight.device
        if chunk is None:
            chunk = 128 if device.type == "cuda" else 32
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self._positions(probe[:1], "probe")  # validate shapes before any work
        self._positions(gallery[:1], "gallery")
        out = torch.empty(probe.shape[0], gallery.shape[0], dtype=torch.float32, device=out_device or device)
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        with eval_mode(self), autocast:
            starts = range(0, probe.shape[0], chunk)
            for p0 in tqdm(starts, desc="QAConv matching", disable=not progress, leave=False):
                p_block = probe[p0 : p0 + chunk].to(device, non_blocking=True)  # (cp, ...)
                for g0 in range(0, gallery.shape[0], chunk):
                    g_block = gallery[g0 : g0 + chunk].to(device, non_blocking=True)  # (cg, ...)
                    scores = self(p_block, g_block).float()  # (cp, cg)
                    out[p0 : p0 + scores.shape[0], g0 : g0 + scores.shape[1]] = scores.to(out.device)
        return out
