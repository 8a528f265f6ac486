r"""EnsembleNet: one ResNet branched into an ensemble of part-pooled heads.

Wang, Li, Miao, "Ensemble Feature for Person Re-Identification", arXiv 1901.05798 (2019).

Instead of training K networks and concatenating their features (K times the training time and
the weights to keep), the network is shared up to and including the first block of its last
stage (``res_conv5_1`` / res5a in ResNet-50) and then splits into B branches, each with its own
copy of the rest of that stage (res5b, res5c). Branch :math:`b \in \{1..B\}` cuts its map
:math:`F^{(b)}` into :math:`b` horizontal stripes by adaptive average pooling,

.. math::
    g^{(b)}_p = \frac{1}{|R_p| W} \sum_{h \in R_p} \sum_{w} F^{(b)}_{:, h, w},
    \qquad R_p = \Big[\big\lfloor \tfrac{(p-1) H}{b} \big\rfloor,\;
                     \big\lceil \tfrac{p H}{b} \big\rceil\Big), \quad p = 1..b,

reduces each stripe with a 1x1 conv (+ BN, ReLU) to a d-dimensional part feature
:math:`f^{(b)}_p` (d = 256 in the paper), and classifies each part with its own softmax. The
training loss is the sum of the per-part cross-entropies

.. math::
    L = \sum_{b=1}^{B} \sum_{p=1}^{b} \mathrm{CE}\big(W^{(b)}_p f^{(b)}_p + c^{(b)}_p,\; y\big),

and the test ("ensemble") feature concatenates every part feature:
:math:`d \cdot B(B+1)/2` dimensions (1536 for the paper's three branches).

What the paper's abstract states: a ResNet-50 divided into several end-to-end branches whose
features are concatenated into the ensemble feature. What secondary summaries of the paper add
(a topic page and paper notes; the full text could not be read): the split after
``res_conv5_1``, branch b pooled into b stripes, 256-d reduction, one softmax per part. What no
source confirms, and this module chooses: BN (+ optional ReLU) after the reduction conv, last
stride 1 (so a 256x128 input gives a 16x8 map, enough rows for the stripes), no triplet loss.

Two options serve the chapter's controls and its small CPU backbone:

* ``trunk_end="layer3"`` ends the shared trunk before the last stage, so every branch owns a full
  copy of ``layer4``. ResNet-10 has one block per stage, so this is the only split it allows.
* ``stripes`` gives each branch's number of stripes (default ``(1, 2, ..., B)``); ``(1, 1, 1)``
  is three globally pooled branches: shared trunk and separate copies, but no stripes.

``backbone`` may also be a ready :class:`~reid_core.models.backbone.ResNetBackbone` (for example
one loaded with pretrained weights): the trunk takes its layers and every branch starts from a
copy of its last-stage weights. See ``notebooks/04_ensemblenet.py`` for the chapter.

Example:
    >>> net = EnsembleNet(num_classes=10, num_branches=3, backbone="resnet18", reduction_dim=64)
    >>> out = net(torch.zeros(2, 3, 128, 64))
    >>> out.feat.shape, len(out.logits)
    (torch.Size([2, 384]), 6)
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_core.models.backbone import ResNetBackbone, build_backbone
from reid_core.models.outputs import ReIDOutput
from reid_core.modes import eval_mode

__all__ = [
    "EnsembleNet",
    "PartHead",
    "BranchActivation",
    "ensemble_loss",
    "part_activation_maps",
    "part_row_ranges",
    "MAX_BRANCHES",
]

MAX_BRANCHES = 8
TRUNK_ENDS = ("res_conv5_1", "layer3")
"""Where the shared trunk may end: after the first block of the last stage (the paper), or before that stage."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def part_row_ranges(height: int, num_parts: int) -> list[tuple[int, int]]:
    """Rows ``[start, end)`` that adaptive average pooling to ``num_parts`` rows averages over.

    PyTorch's adaptive pooling uses ``start = floor(p * H / n)`` and ``end = ceil((p + 1) * H / n)``
    for output row p, so stripes overlap by one row when n does not divide H.

    Args:
        height: H, rows of the map.
        num_parts: n, the number of stripes.

    Returns:
        n pairs ``(start, end)``, top to bottom.
    """
    _check_positive_int("height", height)
    _check_positive_int("num_parts", num_parts)
    return [((p * height) // num_parts, math.ceil((p + 1) * height / num_parts)) for p in range(num_parts)]


class PartHead(nn.Module):
    """Reduction (1x1 conv without bias, BN, optionally ReLU) and identity classifier of one part.

    Args:
        in_channels: C of the branch map.
        reduction_dim: d of the part feature.
        num_classes: number of training identities.
        relu: end the reduction with a ReLU (MGN's head; the EnsembleNet sources do not say).
    """

    def __init__(self, in_channels: int, reduction_dim: int, num_classes: int, relu: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, reduction_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(reduction_dim),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.reduce = nn.Sequential(*layers)
        self.classifier = nn.Linear(reduction_dim, num_classes)
        nn.init.kaiming_normal_(self.reduce[0].weight, mode="fan_in", nonlinearity="relu")
        nn.init.ones_(self.reduce[1].weight)
        nn.init.zeros_(self.reduce[1].bias)
        # Small logits at the start, so every part's loss begins near log(C).
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Reduce and classify one pooled stripe.

        Args:
            pooled: (B, C, 1, 1) the stripe's average.

        Returns:
            ``(feature, logits)``: (B, d) and (B, num_classes).
        """
        feature = self.reduce(pooled).flatten(1)  # (B, d)
        return feature, self.classifier(feature)  # (B, d), (B, num_classes)


class EnsembleNet(nn.Module):
    """A shared ResNet trunk and ``num_branches`` part-pooled branches.

    Args:
        num_classes: number of training identities C.
        num_branches: B, from 1 to :data:`MAX_BRANCHES`.
        backbone: a backbone name (``"resnet10"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
            ``"resnet101"``), or a ready :class:`~reid_core.models.backbone.ResNetBackbone`
            (e.g. loaded with pretrained weights; its modules are taken over, with last stride 1).
        reduction_dim: d, channels of each part feature (256 in the paper's reading).
        pretrained: start from ImageNet weights (only with a backbone name); every branch starts
            from the same copy of them.
        reduction_relu: end each part's reduction with a ReLU (as MGN's heads do; the
            EnsembleNet sources do not say).
        trunk_end: ``"res_conv5_1"`` (the paper: the trunk ends with the first block of the last
            stage, each branch owns the rest of it) or ``"layer3"`` (each branch owns a full copy
            of the last stage; the only choice for ResNet-10, whose stages have one block).
        stripes: the number of stripes of each branch, B positive ints; default ``(1, 2, ..., B)``
            (branch b pools into b stripes). ``(1,) * B`` gives B globally pooled branches.

    Attributes:
        trunk: the shared layers (stem, layer1..layer3, and ``res_conv5_1`` unless ``trunk_end="layer3"``).
        branches: B deep copies of the rest of layer4.
        heads: for branch b, a list of ``stripes[b-1]`` :class:`PartHead`.
        stripes: the stripes per branch, a tuple of B ints.

    ``forward`` returns, in train and eval mode alike, a :class:`ReIDOutput` with
        ``feat`` (N, d * sum(stripes)): the concatenated part features (the ensemble feature);
        ``parts``: the sum(stripes) part features, each (N, d), branch-major, top stripe first;
        ``logits``: the per-part logits, each (N, C), in the same order.
    Batches of one image cannot be run in train mode (the BN layers need two samples).
    """

    def __init__(
        self,
        num_classes: int,
        num_branches: int = 3,
        backbone: str | ResNetBackbone = "resnet50",
        reduction_dim: int = 256,
        pretrained: bool = False,
        reduction_relu: bool = True,
        trunk_end: str = "res_conv5_1",
        stripes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("reduction_dim", reduction_dim)
        valid_int = isinstance(num_branches, int) and not isinstance(num_branches, bool)
        if not valid_int or not 1 <= num_branches <= MAX_BRANCHES:
            raise ValueError(f"num_branches must be an int from 1 to {MAX_BRANCHES}, got {num_branches!r}")
        if trunk_end not in TRUNK_ENDS:
            raise ValueError(f"trunk_end must be one of {TRUNK_ENDS}, got {trunk_end!r}")
        stripes = tuple(range(1, num_branches + 1)) if stripes is None else tuple(stripes)
        if len(stripes) != num_branches:
            raise ValueError(f"stripes must give one count per branch ({num_branches}), got {stripes!r}")
        for count in stripes:
            _check_positive_int("every entry of stripes", count)
        if isinstance(backbone, ResNetBackbone):
            if pretrained:
                raise ValueError("pretrained=True needs a backbone name; a ready ResNetBackbone brings its own weights")
            net = backbone
        else:
            net = build_backbone(backbone, pretrained=pretrained, last_stride=1)
        stage4_stride = net.layer4[0].downsample[0].stride if net.layer4[0].downsample is not None else (1, 1)
        if tuple(stage4_stride) != (1, 1):
            raise ValueError("EnsembleNet needs a backbone with last stride 1 (build it with last_stride=1)")
        if trunk_end == "res_conv5_1" and len(net.layer4) < 2:
            raise ValueError(
                f"trunk_end='res_conv5_1' needs a backbone whose last stage has at least two blocks (the trunk ends "
                f"with res_conv5_1, each branch owns the rest of the stage); {net.name!r} has {len(net.layer4)}. "
                "Use trunk_end='layer3' (each branch owns a full copy of the last stage), or resnet18/34/50/101."
            )
        self.num_classes = num_classes
        self.num_branches = num_branches
        self.reduction_dim = reduction_dim
        self.stripes = stripes
        self.trunk_end = trunk_end
        trunk_layers = OrderedDict(stem=net.stem, layer1=net.layer1, layer2=net.layer2, layer3=net.layer3)
        if trunk_end == "res_conv5_1":
            trunk_layers["res_conv5_1"] = net.layer4[0]
            rest_of_stage = net.layer4[1:]  # (res_conv5_2, res_conv5_3) in ResNet-50
        else:
            rest_of_stage = net.layer4  # the whole last stage
        self.trunk = nn.Sequential(trunk_layers)
        self.branches = nn.ModuleList(copy.deepcopy(rest_of_stage) for _ in range(num_branches))
        channels = net.out_channels
        self.heads = nn.ModuleList(
            nn.ModuleList(PartHead(channels, reduction_dim, num_classes, relu=reduction_relu) for _ in range(count))
            for count in stripes
        )

    @property
    def num_parts(self) -> int:
        """sum(stripes), the number of part features (B(B+1)/2 with the default stripes)."""
        return sum(self.stripes)

    @property
    def feat_dim(self) -> int:
        """d * sum(stripes), the size of the ensemble feature."""
        return self.reduction_dim * self.num_parts

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Final map of every branch.

        Args:
            x: (N, 3, H, W) normalised images.

        Returns:
            B maps, each (N, C, H/16, W/16).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        if self.training and x.shape[0] < 2:
            raise ValueError(
                "EnsembleNet in train mode needs a batch of at least 2 images (BatchNorm); call .eval() for one image"
            )
        shared = self.trunk(x)  # (N, C, h, w)
        return [branch(shared) for branch in self.branches]  # B x (N, C, h, w)

    def forward_head(self, branch_maps: list[Tensor]) -> ReIDOutput:
        """Stripe pooling, reduction and classification of every branch's map.

        Args:
            branch_maps: B maps, each (N, C, h, w), as from :meth:`forward_features`.

        Returns:
            The :class:`ReIDOutput` described in the class docstring.
        """
        if len(branch_maps) != self.num_branches:
            raise ValueError(f"expected {self.num_branches} branch maps, got {len(branch_maps)}")
        parts: list[Tensor] = []
        logits: list[Tensor] = []
        for num_stripes, fmap, heads in zip(self.stripes, branch_maps, self.heads):
            pooled = F.adaptive_avg_pool2d(fmap, (num_stripes, 1))  # (N, C, b, 1)
            for p, head in enumerate(heads):
                part, part_logits = head(pooled[:, :, p : p + 1])  # (N, d), (N, C_id)
                parts.append(part)
                logits.append(part_logits)
        feat = torch.cat(parts, dim=1)  # (N, d * sum(stripes))
        return ReIDOutput(feat=feat, logits=logits, parts=parts)

    def forward(self, x: Tensor) -> ReIDOutput:
        """Run the network on (N, 3, H, W) images; see the class docstring for the output."""
        return self.forward_head(self.forward_features(x))

    def ensemble_loss(self, output: ReIDOutput, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Sum of the per-part cross-entropies; see :func:`ensemble_loss`."""
        if isinstance(output.logits, list) and len(output.logits) != self.num_parts:
            raise ValueError(f"expected {self.num_parts} part logits, got {len(output.logits)}")
        return ensemble_loss(output, labels, label_smoothing=label_smoothing)


def ensemble_loss(output: ReIDOutput, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    r"""EnsembleNet's loss: the SUM (not the mean) over parts of the softmax cross-entropy.

    .. math::
        L = \sum_{k=1}^{B(B+1)/2} \frac{1}{N} \sum_{n=1}^{N} \mathrm{CE}_\epsilon(z^{(k)}_n, y_n)

    with :math:`\mathrm{CE}_\epsilon` the cross-entropy against labels smoothed by
    :math:`\epsilon` (Szegedy et al. 2016; 0 in the EnsembleNet paper as far as known).

    Args:
        output: a model output whose ``logits`` is a list of (N, C) tensors.
        labels: (N,) integer identity labels in [0, C).
        label_smoothing: epsilon in [0, 1).

    Returns:
        Scalar loss.
    """
    if not isinstance(output.logits, (list, tuple)) or len(output.logits) == 0:
        raise ValueError("ensemble_loss expects output.logits to be a non-empty list of (N, C) part logits")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} and dtype {labels.dtype}"
        )
    total = output.logits[0].new_zeros(())
    for k, part_logits in enumerate(output.logits):
        if part_logits.dim() != 2 or part_logits.shape[0] != labels.shape[0]:
            raise ValueError(f"part {k}: logits {tuple(part_logits.shape)} do not match labels {tuple(labels.shape)}")
        total = total + F.cross_entropy(part_logits, labels.long(), label_smoothing=label_smoothing)
    return total


@dataclass
class BranchActivation:
    """What one branch of an :class:`EnsembleNet` responds to, for an activation figure.

    Attributes:
        branch: b, 1-based.
        activation: (N, h, w) channel-mean of the branch's final map.
        part_rows: one pair ``(start, end)`` per stripe of the branch: the map rows it averages over.
    """

    branch: int
    activation: Tensor
    part_rows: list[tuple[int, int]]

    def image_rows(self, image_height: int) -> list[tuple[float, float]]:
        """Stripe limits in image pixels: ``part_rows`` scaled by ``image_height / h``."""
        scale = image_height / self.activation.shape[1]
        return [(start * scale, end * scale) for start, end in self.part_rows]


@torch.no_grad()
def part_activation_maps(model: EnsembleNet, images: Tensor, normalize: bool = True) -> list[BranchActivation]:
    """Per-branch activation maps and stripe limits, for overlaying on the input images.

    The model runs in eval mode (its mode is restored afterwards) without gradients.

    Args:
        model: an :class:`EnsembleNet`.
        images: (N, 3, H, W) normalised images.
        normalize: rescale each image's map to [0, 1] (min-max), so maps compare as heatmaps.

    Returns:
        B :class:`BranchActivation`, branch 1 first; each ``activation`` is (N, h, w).
    """
    if not isinstance(model, EnsembleNet):
        raise TypeError(f"model must be an EnsembleNet, got {type(model).__name__}")
    with eval_mode(model):
        branch_maps = model.forward_features(images)  # B x (N, C, h, w)
    result = []
    for b, (fmap, num_stripes) in enumerate(zip(branch_maps, model.stripes), start=1):
        act = fmap.mean(dim=1)  # (N, h, w)
        if normalize:
            flat = act.flatten(1)  # (N, h*w)
            low = flat.min(dim=1).values[:, None, None]  # (N, 1, 1)
            high = flat.max(dim=1).values[:, None, None]  # (N, 1, 1)
            act = (act - low) / (high - low).clamp_min(1e-12)  # (N, h, w)
        rows = part_row_ranges(act.shape[1], num_stripes)
        result.append(BranchActivation(branch=b, activation=act, part_rows=rows))
    return result
