r"""A ResNet embedding network with no classifier: the model every loss of chapter 02 trains.

Metric-learning losses differ in what they put *after* the embedding (nothing for
contrastive and triplet losses, a class-weight head for the softmax family), so the network
stops at the embedding and the head lives in the criterion
(:class:`reid_core.losses.metric_criterion.MetricCriterion`). This keeps the comparison fair: one
backbone, one embedding, only the loss changes.

.. math::
    f = \mathrm{BN}\big(P\,\mathrm{GAP}(F)\big)

with :math:`F` the last ResNet map, :math:`P` an optional linear projection to
``embedding_dim`` (identity when ``embedding_dim`` is ``None``) and a ``BatchNorm1d`` that
centres the embedding, so its *directions* (what the cosine heads see) use the whole sphere.

Chapter: ``notebooks/02_metric_learning.py`` (the SynthReID comparison).
"""

from __future__ import annotations

from torch import Tensor, nn

from reid_core.models.backbone import build_backbone
from reid_core.models.outputs import ReIDOutput

__all__ = ["EmbeddingNet"]


class EmbeddingNet(nn.Module):
    """ResNet -> global average pooling -> (projection) -> BatchNorm1d -> embedding.

    Args:
        backbone: a ResNet name accepted by :func:`~reid_core.models.backbone.build_backbone`.
        embedding_dim: size of the embedding; ``None`` keeps the backbone's channels.
        pretrained: ImageNet weights for the backbone.
        last_stride: stride of the last ResNet stage (1 keeps a larger final map).

    Example:
        >>> net = EmbeddingNet("resnet18", embedding_dim=128)
        >>> net(torch.zeros(2, 3, 64, 32)).feat.shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        embedding_dim: int | None = None,
        pretrained: bool = False,
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1 or None, got {embedding_dim}")
        self.backbone = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride)
        channels = self.backbone.out_channels
        self.embedding_dim = channels if embedding_dim is None else embedding_dim
        self.project = nn.Identity() if embedding_dim is None else nn.Linear(channels, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(self.embedding_dim)

    def forward(self, images: Tensor) -> ReIDOutput:
        """Args: images (B, 3, H, W). Returns: ``ReIDOutput`` with ``feat`` = ``global_feat`` (B, D)."""
        fmap = self.backbone(images)  # (B, C, h, w)
        pooled = fmap.mean(dim=(2, 3))  # (B, C)
        emb = self.bn(self.project(pooled))  # (B, D)
        return ReIDOutput(feat=emb, global_feat=emb, feature_map=fmap)
