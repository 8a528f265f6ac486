r"""The strong re-ID baseline with BNNeck (Luo et al., CVPRW 2019, "Bag of Tricks and A Strong
Baseline for Deep Person Re-identification", arXiv 1903.07071).

The model is a ResNet with last stride 1, a global pooling layer and the *BNNeck*:

.. math::
    f_t = \mathrm{pool}(F), \qquad
    f_i = \gamma \odot \frac{f_t - \mu}{\sqrt{\sigma^2 + \epsilon}} \;(+\,\beta = 0), \qquad
    z = W f_i

where :math:`F` is the final (B, C, H, W) map. The triplet loss sees :math:`f_t`, the ID
(cross-entropy) loss sees the logits :math:`z`, and retrieval uses :math:`f_i`. The paper's
argument: the ID loss is optimised by angular (cosine) decisions while the triplet loss works in
euclidean space; the BN layer separates the two feature spaces and makes :math:`f_i` close to
normally distributed around the origin, so its cosine geometry suits the classifier. The BN
shift :math:`\beta` is frozen at 0 and the classifier has no bias, so the class decision
boundaries pass through the origin of the :math:`f_i` space.

Initialisation as in the authors' code (michuanhaohao/reid-strong-baseline): the BN scale 1 and
shift 0 (the "kaiming" init of a BN layer), the classifier weights :math:`\mathcal N(0, 0.001^2)`.

Paper figures (ResNet-50, 256x128, all tricks, no re-ranking): Market-1501 rank-1 94.5 / mAP
85.9 (abstract); DukeMTMC-reID rank-1 86.4 (mAP 76.4 as recalled from the paper's table, not
re-checked against the PDF).

Chapters: ``notebooks/01_reid_basics.py`` (the baseline), and every chapter that compares
against it.

Example:
    >>> net = BaselineNet(num_classes=10, backbone="resnet18")
    >>> out = net(torch.zeros(2, 3, 128, 64))
    >>> out.feat.shape, out.logits.shape
    (torch.Size([2, 512]), torch.Size([2, 10]))
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.models.backbone import build_backbone
from reid_core.models.outputs import ReIDOutput

__all__ = ["BaselineNet", "GeneralizedMeanPooling", "build_global_pooling", "NECKS", "POOLINGS"]

Neck = Literal["bnneck", "none"]
Pooling = Literal["avg", "max", "gem"]
NECKS = ("bnneck", "none")
POOLINGS = ("avg", "max", "gem")


class GeneralizedMeanPooling(nn.Module):
    r"""Generalized-mean (GeM) pooling over the whole map (Radenović, Tolias, Chum, TPAMI 2018).

    .. math::
        f_c = \Big(\frac{1}{HW} \sum_{h, w} \max(F_{c,h,w}, \epsilon)^{p}\Big)^{1/p}

    :math:`p = 1` is average pooling and :math:`p \to \infty` max pooling; :math:`p` is learnt,
    starting at 3 as in the paper.

    Args:
        p: initial exponent (> 0).
        eps: lower clamp, so that fractional powers of zero activations stay finite.
        learnable: learn ``p`` by back-propagation.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM exponent p must be > 0, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Pool (B, C, H, W) -> (B, C, 1, 1)."""
        powered = x.clamp(min=self.eps).pow(self.p)  # (B, C, H, W)
        return F.adaptive_avg_pool2d(powered, 1).pow(1.0 / self.p)  # (B, C, 1, 1)


def build_global_pooling(name: str) -> nn.Module:
    """Global pooling layer by name: ``"avg"``, ``"max"`` or ``"gem"``; maps (B, C, H, W) -> (B, C, 1, 1)."""
    if name == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if name == "max":
        return nn.AdaptiveMaxPool2d(1)
    if name == "gem":
        return GeneralizedMeanPooling()
    raise ValueError(f"pooling must be one of {POOLINGS}, got {name!r}")


class BaselineNet(nn.Module):
    """Backbone -> global pooling -> (BNNeck) -> linear classifier (Luo et al. 2019).

    Args:
        num_classes: number of training identities C.
        backbone: a name accepted by :func:`reid_core.models.backbone.build_backbone`.
        pretrained: start from ImageNet weights (needs them downloaded once).
        last_stride: stride of ``layer4``; 1 in the paper (doubles the final map's H and W).
        neck: ``"bnneck"`` (the paper) or ``"none"`` (the classifier, with a bias, sits directly
            on the pooled feature, and ``feat`` is that feature).
        pooling: ``"avg"`` (the paper), ``"max"`` or ``"gem"``.

    Returns from ``forward`` (train and eval mode alike) a :class:`ReIDOutput` with
        ``feat`` (B, D): f_i, the retrieval feature (f_t when ``neck="none"``);
        ``global_feat`` (B, D): f_t, for the triplet loss;
        ``logits`` (B, C): the classifier applied to f_i;
        ``feature_map`` (B, D, h, w): the backbone's final map.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: bool = False,
        last_stride: int = 1,
        neck: Neck = "bnneck",
        pooling: Pooling = "avg",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
        self.backbone = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride)
        self.pool = build_global_pooling(pooling)
        self.neck_type = neck
        self.num_classes = num_classes
        self.feat_dim = self.backbone.out_channels
        if neck == "bnneck":
            self.neck: nn.Module = nn.BatchNorm1d(self.feat_dim)
            nn.init.ones_(self.neck.weight)
            nn.init.zeros_(self.neck.bias)
            # Frozen shift: the ID loss then sees features centred on the origin (the paper's BNNeck).
            self.neck.bias.requires_grad_(False)
            self.classifier = nn.Linear(self.feat_dim, num_classes, bias=False)
        else:
            self.neck = nn.Identity()
            self.classifier = nn.Linear(self.feat_dim, num_classes, bias=True)
            nn.init.zeros_(self.classifier.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone map of a batch: (B, 3, H, W) -> (B, D, H/16, W/16) with last stride 1."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.backbone(x)  # (B, D, h, w)

    def forward_head(self, feature_map: Tensor) -> ReIDOutput:
        """Pooling, neck and classifier on a (B, D, h, w) map; see the class docstring for the output."""
        f_t = self.pool(feature_map).flatten(1)  # (B, D)
        f_i = self.neck(f_t)  # (B, D)
        logits = self.classifier(f_i)  # (B, C)
        return ReIDOutput(feat=f_i, logits=logits, global_feat=f_t, feature_map=feature_map)

    def forward(self, x: Tensor) -> ReIDOutput:
        """Run the model on (B, 3, H, W) images; returns :class:`ReIDOutput` (see the class)."""
        return self.forward_head(self.forward_features(x))
