r"""AlignedReID: a global branch and a local (stripe) branch on one backbone (Zhang et al. 2017,
"AlignedReID: Surpassing Human-Level Performance in Person Re-Identification", arXiv 1711.08184).

From the backbone's final map :math:`F \in \mathbb{R}^{B \times C \times H \times W}`:

* **global branch**: :math:`g = \mathrm{pool}_{H,W}(F) \in \mathbb{R}^{C}` (C = 2048 for
  ResNet-50), used by the global triplet loss, by the ID classifier :math:`z = W g + b`, and at
  test time (the paper keeps only the global feature for retrieval);
* **local branch**: pooling over the width of each row gives H stripe vectors,
  :math:`l_h = \mathrm{pool}_W(F_{:, :, h, :})`, then a 1x1 convolution to ``local_dim`` (128
  in the paper), BN and ReLU: :math:`L \in \mathbb{R}^{B \times H \times 128}`. These feed the
  aligned distance of :mod:`reid_core.alignment`.

Pooling types are parameters. A paper co-author describes average pooling for the global
feature and max pooling for the stripes (michuanhaohao/AlignedReID issue 37), which are the
defaults here; the public re-production (huanghoujing) averages both. The local layer order
(conv with bias -> BN -> ReLU) and the classifier initialisation (weights
:math:`\mathcal N(0, 0.001^2)`, bias 0) follow the re-production.

With a 256x128 input and last stride 1 the map is 16x8 (16 stripes); with last stride 2 as in
the re-production, 8x4 (8 stripes); the paper's 224x224 input gives 7 stripes.

Chapter: ``notebooks/03_alignedreid.py``.

Example:
    >>> net = AlignedReID(num_classes=10, backbone="resnet18")
    >>> out = net(torch.zeros(2, 3, 128, 64))
    >>> out.feat.shape, out.local.shape, out.logits.shape
    (torch.Size([2, 512]), torch.Size([2, 8, 128]), torch.Size([2, 10]))
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from reid_core.models.backbone import build_backbone
from reid_core.models.outputs import ReIDOutput

__all__ = ["AlignedReID", "POOL_TYPES"]

PoolType = Literal["avg", "max"]
POOL_TYPES = ("avg", "max")


def _check_pool(name: str, value: str) -> None:
    if value not in POOL_TYPES:
        raise ValueError(f"{name} must be one of {POOL_TYPES}, got {value!r}")


class AlignedReID(nn.Module):
    """Backbone -> global feature + ID classifier, and horizontal stripes -> 1x1 conv -> BN -> ReLU.

    Args:
        num_classes: number of training identities C.
        backbone: a name accepted by :func:`reid_core.models.backbone.build_backbone`.
        pretrained: start from ImageNet weights (needs them downloaded once).
        last_stride: stride of ``layer4`` (1 doubles the number of stripes; the re-production used 2).
        global_pool: ``"avg"`` (authors) or ``"max"``, over the whole map.
        local_pool: ``"max"`` (authors) or ``"avg"`` (re-production), over the width of each row.
        local_dim: channels of a stripe feature after the 1x1 conv (128 in the paper).

    ``forward`` returns (train and eval mode alike) a :class:`ReIDOutput` with
        ``feat`` (B, C): the global feature, used for retrieval;
        ``global_feat`` (B, C): the same tensor, for the global triplet loss;
        ``logits`` (B, num_classes): the ID classifier on the global feature;
        ``local`` (B, H, local_dim): one feature per horizontal stripe;
        ``feature_map`` (B, C, H, W): the backbone's final map.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: bool = False,
        last_stride: int = 1,
        global_pool: PoolType = "avg",
        local_pool: PoolType = "max",
        local_dim: int = 128,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if isinstance(local_dim, bool) or not isinstance(local_dim, int) or local_dim < 1:
            raise ValueError(f"local_dim must be a positive int, got {local_dim!r}")
        _check_pool("global_pool", global_pool)
        _check_pool("local_pool", local_pool)
        self.backbone = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride)
        channels = self.backbone.out_channels
        self.feat_dim, self.local_dim, self.num_classes = channels, local_dim, num_classes
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        # Output size (None, 1): keep every row, pool the width away.
        self.local_pool = nn.AdaptiveAvgPool2d((None, 1)) if local_pool == "avg" else nn.AdaptiveMaxPool2d((None, 1))
        self.local_reduce = nn.Sequential(
            nn.Conv2d(channels, local_dim, kernel_size=1, bias=True),
            nn.BatchNorm2d(local_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone map of a batch: (B, 3, H_in, W_in) -> (B, C, H, W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.backbone(x)  # (B, C, H, W)

    def forward_head(self, feature_map: Tensor) -> ReIDOutput:
        """Global and local branches on a (B, C, H, W) map; see the class docstring for the output."""
        global_feat = self.global_pool(feature_map).flatten(1)  # (B, C)
        stripes = self.local_pool(feature_map)  # (B, C, H, 1)
        local = self.local_reduce(stripes).squeeze(3).transpose(1, 2)  # (B, H, local_dim)
        logits = self.classifier(global_feat)  # (B, num_classes)
        return ReIDOutput(
            feat=global_feat, logits=logits, global_feat=global_feat, local=local, feature_map=feature_map
        )

    def forward(self, x: Tensor) -> ReIDOutput:
        """Run the model on (B, 3, H, W) images; returns :class:`ReIDOutput` (see the class)."""
        return self.forward_head(self.forward_features(x))
