r"""A small CNN for scikit-learn's 8x8 digits, ending in a low-dimensional embedding.

The toy of the metric-learning chapter: the digits that ship with scikit-learn
(``sklearn.datasets.load_digits``, 1,797 greyscale 8x8 images, 10 classes) are mapped to a
D-dimensional embedding, with D = 3 so that the directions :math:`x / \lVert x\rVert` can be
drawn on the unit sphere. The layout follows the MNIST toy of the ``4uiiurz1/pytorch-adacos``
repo (VGG-style conv-BN-ReLU blocks, a fully connected layer to D, a final ``BatchNorm1d``),
shrunk for 8x8 inputs:

.. code-block:: text

    (B, 1, 8, 8) -> [conv3x3-BN-ReLU] x 2 (32) -> maxpool -> (B, 32, 4, 4)
                 -> conv3x3-BN-ReLU (64) -> maxpool -> (B, 64, 2, 2) -> flatten (256)
                 -> FC 256->64 -> ReLU -> FC 64->D -> BN1d -> embedding (B, D)

The final ``BatchNorm1d`` centres every embedding coordinate on the batch, which spreads the
directions over the whole sphere instead of one cap of it.

Chapter: ``notebooks/02_metric_learning.py`` (the toy experiment).
"""

from __future__ import annotations

from torch import Tensor, nn

from reid_core.models.outputs import ReIDOutput

__all__ = ["DigitsConvNet"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias: BN follows), BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DigitsConvNet(nn.Module):
    """Small CNN: (B, 1, 8, 8) digits -> (B, D) embedding, returned as a :class:`ReIDOutput`.

    Args:
        embedding_dim: D, the size of the embedding (3 for the sphere figures).
        width: channels of the first block (the second block has twice as many).
        final_bn: end with a ``BatchNorm1d`` on the embedding (as the AdaCos repo's MNIST net).

    Example:
        >>> net = DigitsConvNet(embedding_dim=3)
        >>> net(torch.zeros(4, 1, 8, 8)).feat.shape
        torch.Size([4, 3])
    """

    def __init__(self, embedding_dim: int = 3, width: int = 32, final_bn: bool = True) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.embedding_dim = embedding_dim
        self.features = nn.Sequential(
            _conv_bn_relu(1, width),
            _conv_bn_relu(width, width),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, embedding_dim),
        )
        self.bn = nn.BatchNorm1d(embedding_dim) if final_bn else nn.Identity()

    def forward(self, images: Tensor) -> ReIDOutput:
        """Embed a batch of digits.

        Args:
            images: (B, 1, 8, 8) float images (standardised).

        Returns:
            ``ReIDOutput`` with ``feat`` = ``global_feat`` = the (B, D) embedding.
        """
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 8, 8):
            raise ValueError(f"images must be (B, 1, 8, 8), got {tuple(images.shape)}")
        fmap = self.features(images)  # (B, 2w, 2, 2)
        emb = self.bn(self.embed(fmap))  # (B, D)
        return ReIDOutput(feat=emb, global_feat=emb)
