"""The EnsembleNet chapter's experiment: one run per (arm, seed) in :func:`train_and_evaluate`
(the arms in :data:`ARMS`), ensemble features, EnsembleNet's parameter groups, per-part feature
slices, and evaluation on a subset of queries.

Chapter: ``notebooks/04_ensemblenet.py``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reid_core.engine.evaluate import EvalResult, evaluate_distance
from reid_core.engine.features import Features
from reid_core.models.ensemblenet import EnsembleNet
from reid_core.models.parameters import count_parameters

__all__ = [
    "ARMS",
    "ArmSpec",
    "MEMBER_SEED_STRIDE",
    "forward_macs",
    "load_split",
    "run_group",
    "train_and_evaluate",
    "concat_features",
    "ensemblenet_parameter_groups",
    "PartSlice",
    "part_feature_slices",
    "branch_feature_slices",
    "slice_features",
    "local_part_only_pids",
    "evaluate_query_subset",
]


def concat_features(members: Sequence[Features], normalize: bool = False) -> Features:
    """The ensemble's features from features already extracted by each member (no re-run).

    Args:
        members: K :class:`Features` of the same images in the same order, each (N, D_k).
        normalize: L2-normalise each member's rows first, as ``ConcatEnsemble(normalize=True)``.

    Returns:
        (N, sum_k D_k) :class:`Features`. Without ``normalize`` they equal what
        :class:`ConcatEnsemble` extracts with the same ``flip`` setting (flip averaging is
        linear). With ``normalize`` and flip averaging they differ slightly: here the
        flip-averaged member features are normalised, there each view is normalised first.
    """
    if len(members) == 0:
        raise ValueError("concat_features needs at least one Features, got an empty sequence")
    first = members[0]
    for k, member in enumerate(members):
        if member.features.dim() != 2 or member.features.shape[0] != first.features.shape[0]:
            raise ValueError(
                f"members[{k}]: features {tuple(member.features.shape)} do not match "
                f"members[0] {tuple(first.features.shape)}; expected (N, D_k) of the same N images"
            )
        if not (np.array_equal(member.pids, first.pids) and np.array_equal(member.camids, first.camids)):
            raise ValueError(f"members[{k}] lists other images (pids/camids differ from members[0])")
    blocks = [F.normalize(m.features, dim=1) if normalize else m.features for m in members]  # K x (N, D_k)
    return Features(torch.cat(blocks, dim=1), first.pids, first.camids)  # (N, sum D_k)


def ensemblenet_parameter_groups(model: EnsembleNet) -> dict[str, int]:
    """Where an EnsembleNet's parameters sit: shared trunk, branch copies, part heads.

    Args:
        model: an :class:`EnsembleNet`.

    Returns:
        ``{"shared trunk", "branches", "part reductions", "part classifiers", "total",
        "test-time"}``; "test-time" leaves out the classifiers, which retrieval never uses.
    """
    if not isinstance(model, EnsembleNet):
        raise TypeError(f"model must be an EnsembleNet, got {type(model).__name__}")
    classifiers = sum(count_parameters(head.classifier) for heads in model.heads for head in heads)
    reductions = sum(count_parameters(head.reduce) for heads in model.heads for head in heads)
    groups = {
        "shared trunk": count_parameters(model.trunk),
        "branches": count_parameters(model.branches),
        "part reductions": reductions,
        "part classifiers": classifiers,
        "total": count_parameters(model),
    }
    groups["test-time"] = groups["total"] - classifiers
    return groups


@dataclass(frozen=True)
class PartSlice:
    """Where one part (or one branch) of an EnsembleNet feature lies in ``feat``.

    Attributes:
        branch: b, 1-based.
        part: p, 1-based stripe within the branch (top first); 0 for a whole branch.
        columns: the ``slice`` of ``feat``'s columns.
    """

    branch: int
    part: int
    columns: slice

    @property
    def label(self) -> str:
        """``"b3"`` for a whole branch, ``"b3p2"`` for part 2 of branch 3."""
        return f"b{self.branch}" if self.part == 0 else f"b{self.branch}p{self.part}"


def _check_layout(num_branches: int, reduction_dim: int, stripes: Sequence[int] | None) -> tuple[int, ...]:
    for name, value in (("num_branches", num_branches), ("reduction_dim", reduction_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    counts = tuple(range(1, num_branches + 1)) if stripes is None else tuple(stripes)
    if len(counts) != num_branches or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
        raise ValueError(f"stripes must be {num_branches} positive ints, got {stripes!r}")
    return counts


def part_feature_slices(num_branches: int, reduction_dim: int, stripes: Sequence[int] | None = None) -> list[PartSlice]:
    """Columns of each part feature in EnsembleNet's ``feat`` (branch-major, top stripe first).

    With the default stripes (branch b has b), part p of branch b is feature number
    :math:`k = b(b-1)/2 + p` (1-based), so it lies in columns :math:`[d(k-1), dk)` for reduction
    dimension d.

    Args:
        num_branches: B.
        reduction_dim: d.
        stripes: stripes per branch (default ``(1, 2, ..., B)``, as the model's).

    Returns:
        sum(stripes) :class:`PartSlice`, in ``feat`` order.
    """
    counts = _check_layout(num_branches, reduction_dim, stripes)
    slices = []
    k = 0
    for b, count in enumerate(counts, start=1):
        for p in range(1, count + 1):
            slices.append(PartSlice(b, p, slice(k * reduction_dim, (k + 1) * reduction_dim)))
            k += 1
    return slices


def branch_feature_slices(
    num_branches: int, reduction_dim: int, stripes: Sequence[int] | None = None
) -> list[PartSlice]:
    """Columns of each branch's concatenated parts: with the default stripes, branch b spans
    :math:`[d\\,b(b-1)/2,\\; d\\,b(b+1)/2)`.

    Args:
        num_branches: B.
        reduction_dim: d.
        stripes: stripes per branch (default ``(1, 2, ..., B)``).

    Returns:
        B :class:`PartSlice` with ``part == 0``.
    """
    counts = _check_layout(num_branches, reduction_dim, stripes)
    slices, start = [], 0
    for b, count in enumerate(counts, start=1):
        slices.append(PartSlice(b, 0, slice(start * reduction_dim, (start + count) * reduction_dim)))
        start += count
    return slices


def slice_features(features: Features, columns: slice) -> Features:
    """The same images with only some feature columns: (N, D) -> (N, D')."""
    if features.features.dim() != 2:
        raise ValueError(f"slice_features expects (N, D) features, got {tuple(features.features.shape)}")
    return Features(features.features[:, columns], features.pids, features.camids)


def local_part_only_pids(identities: Iterable[Mapping[str, Any]], split: str = "test") -> set[int]:
    """SynthReID identities that differ from a look-alike only in a local part (shoes, bag, hem).

    Args:
        identities: ``SynthReIDInfo.identities`` (each a mapping with ``pid``, ``split`` and
            ``local_part_only``).
        split: ``"test"`` or ``"train"``.

    Returns:
        The pids with ``local_part_only`` true in that split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pids = set()
    for k, ident in enumerate(identities):
        missing = [key for key in ("pid", "split", "local_part_only") if key not in ident]
        if missing:
            raise ValueError(f"identities[{k}] lacks {missing}; expected SynthReIDInfo.identities entries")
        if ident["split"] == split and ident["local_part_only"]:
            pids.add(int(ident["pid"]))
    return pids


def evaluate_query_subset(
    result: EvalResult, query_mask: np.ndarray | Sequence[bool], max_rank: int = 50
) -> EvalResult:
    """Re-evaluate an :class:`EvalResult` on some of its queries only (same gallery).

    Args:
        result: an evaluation that kept its ``query`` and ``gallery`` features.
        query_mask: (Q,) booleans, True for the queries to keep.
        max_rank: CMC length.

    Returns:
        A new :class:`EvalResult` over the kept queries.
    """
    if result.query is None or result.gallery is None:
        raise ValueError("evaluate_query_subset needs an EvalResult that holds its query and gallery Features")
    mask = np.asarray(query_mask, dtype=bool)
    num_q = result.distmat.shape[0]
    if mask.shape != (num_q,):
        raise ValueError(f"query_mask must have shape ({num_q},), got {mask.shape}")
    if not mask.any():
        raise ValueError("query_mask selects no query")
    keep = torch.from_numpy(np.flatnonzero(mask))
    q = result.query
    sub = Features(q.features[keep], q.pids[mask], q.camids[mask])
    return evaluate_distance(result.distmat[keep], sub, result.gallery, max_rank=max_rank)


# ------------------------------------------------------------------------------- the runs
@dataclass(frozen=True)
class ArmSpec:
    """One arm of the chapter's experiment.

    Attributes:
        kind: ``"ensemblenet"`` (one network, ``stripes`` per branch), ``"members"`` (``members``
            separately trained single-branch networks, features concatenated) or ``"bnneck"``
            (the strong baseline's global BNNeck feature, softmax only).
        stripes: stripes per branch (``"ensemblenet"``); ``(1, 2, 3)`` is the paper's three branches.
        members: how many networks (``"members"``).
        match: the arm whose training compute the members share out (``"members"``): each member
            trains for ``1 / members`` of that arm's forward multiply-accumulates per epoch.
    """

    kind: str
    stripes: tuple[int, ...] = ()
    members: int = 0
    match: str = ""

    @property
    def label(self) -> str:
        """How the chapter's tables name the arm."""
        if self.kind == "bnneck":
            return "BNNeck baseline (global, 512-d)"
        if self.kind == "members":
            return f"{self.members} separate networks, concatenated (equal compute to {self.match})"
        if len(set(self.stripes)) == 1 and self.stripes[0] == 1 and len(self.stripes) > 1:
            return f"{len(self.stripes)} branches, all global"
        return f"EnsembleNet B={len(self.stripes)}"


ARMS: dict[str, ArmSpec] = {
    "b1": ArmSpec("ensemblenet", stripes=(1,)),
    "b2": ArmSpec("ensemblenet", stripes=(1, 2)),
    "b3": ArmSpec("ensemblenet", stripes=(1, 2, 3)),
    "b3_global": ArmSpec("ensemblenet", stripes=(1, 1, 1)),
    "members3": ArmSpec("members", stripes=(1,), members=3, match="b3"),
    "bnneck": ArmSpec("bnneck"),
}
"""The arms, by name: branch counts, the all-global control, the classic ensemble, the BNNeck reference."""

MEMBER_SEED_STRIDE = 100
"""Member k of seed s trains with seed ``s + 100 k``: member 0 is seed s's single network, the others are new."""


def forward_macs(model: torch.nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and linear layers).

    Training costs about three forward passes, so the ratio of two models' counts is the ratio of
    their training compute per image; unlike wall time it does not depend on the machine's load.
    """
    total = 0

    def conv_hook(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += int(output[0].numel()) * kernel  # per output element: one dot product

    def linear_hook(module: torch.nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += int(output[0].numel()) * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def load_split(data: Mapping[str, Any], split: str = "test", validation_seed: int = 0) -> tuple[Any, Any]:
    """The images of one run and the world's metadata (for the local-part identities).

    Args:
        data: ``{"synthreid_root": folder}`` for a SynthReID world, or ``{"dataset": name,
            "data_root": folder, "cuhk03_split": ...}`` for a real dataset.
        split: ``"test"`` (train / query / gallery) or ``"validation"`` (training identities
            only: :func:`reid_core.data.carve_validation` holds a fifth of them out as query and
            gallery; recipes are chosen there, never on the test split).
        validation_seed: the seed of the held-out draw.

    Returns:
        ``(train, query, gallery, num_classes)`` lists and the :class:`SynthReIDInfo` (``None``
        for a real dataset).
    """
    from reid_core.data import SynthReID, SynthReIDInfo, build_dataset, carve_validation

    if "synthreid_root" in data:
        reader = SynthReID(data["synthreid_root"], verbose=False)
        info = SynthReIDInfo.from_json(data["synthreid_root"])
    else:
        kwargs = {"split": data["cuhk03_split"]} if data["dataset"] == "cuhk03" else {}
        reader = build_dataset(data["dataset"], data["data_root"], **kwargs)
        info = None
    if split == "test":
        train, query, gallery = reader.train, reader.query, reader.gallery
    elif split == "validation":
        carved = carve_validation(reader.train, 0.2, seed=validation_seed)
        train, query, gallery = carved.train, carved.query, carved.gallery
        info = None  # the local-part flags are kept for test identities only
    else:
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    num_classes = len({pid for _, pid, _ in train})
    return (train, query, gallery, num_classes), info


def _build_model(
    spec: ArmSpec, num_classes: int, backbone: str, weights: Any, imagenet: bool, head: Mapping[str, Any]
) -> torch.nn.Module:
    """The arm's model, its backbone loaded with the pretrained weights (``weights``) when given."""
    from reid_core.book import load_pretrained_backbone
    from reid_core.models import BaselineNet, build_backbone

    if spec.kind == "bnneck":
        model = BaselineNet(num_classes, backbone=backbone, pretrained=imagenet, last_stride=1)
        if weights is not None:
            load_pretrained_backbone(model.backbone, weights)
        return model
    net = build_backbone(backbone, pretrained=imagenet, last_stride=1)
    if weights is not None:
        load_pretrained_backbone(net, weights)  # the trunk takes these layers; each branch copies layer4
    return EnsembleNet(
        num_classes,
        num_branches=len(spec.stripes),
        backbone=net,
        reduction_dim=head["reduction_dim"],
        reduction_relu=head["reduction_relu"],
        trunk_end=head["trunk_end"],
        stripes=spec.stripes,
    )


def _criterion(output: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """EnsembleNet's loss (the sum of the per-part cross-entropies); one cross-entropy for a single head."""
    from reid_core.models import ensemble_loss

    if isinstance(output.logits, list):
        return {"id": ensemble_loss(output, labels)}
    return {"id": F.cross_entropy(output.logits, labels)}


def _local_metrics(result: EvalResult, mask: np.ndarray | None) -> dict[str, float | None]:
    if mask is None or not mask.any():
        return {"rank1_local": None, "mAP_local": None}
    sub = evaluate_query_subset(result, mask).metrics
    return {"rank1_local": sub["rank1"], "mAP_local": sub["mAP"]}


def train_and_evaluate(
    arm: str,
    seed: int,
    *,
    data: Mapping[str, Any],
    recipe: Mapping[str, Any],
    weights: Any = None,
    split: str = "test",
    device: str = "cpu",
    activation_paths: Sequence[str] = (),
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Train one arm with one seed, evaluate it, and return what the chapter shows (renders nothing).

    Seed s fixes the PK sampler's order and the new layers' initialisation of every arm alike, so
    the arms are paired by seed; the pretrained backbone is the same file for all. A members arm
    trains its networks one after another with seeds ``s + 100 k``.

    Args:
        arm: a key of :data:`ARMS`.
        seed: the run's seed.
        data: where the images are (see :func:`load_split`).
        recipe: ``backbone``, ``imagenet``, ``height``, ``width``, ``reduction_dim``,
            ``reduction_relu``, ``trunk_end``, ``epochs``, ``max_iters_per_epoch``,
            ``ids_per_batch``, ``num_instances``, ``optimizer``, ``lr``, ``weight_decay``,
            ``scheduler``, ``milestones``, ``warmup_epochs``, ``random_erasing_p``, ``flip_test``,
            ``precision``, ``batch_augment``, ``preload``.
        weights: the pretrained backbone (:class:`~reid_core.book.PretrainedBackbone`) or ``None``.
        split: ``"test"`` or ``"validation"`` (see :func:`load_split`).
        device: where to train.
        activation_paths: images whose per-branch activation maps to return (EnsembleNet arms).
        checkpoint_dir: where the trainer keeps ``last.pt`` and resumes from (the ``paper``
            profile's long runs); a members arm uses one subfolder per member. ``None``: none.

    Returns:
        A dict: ``rank1``, ``mAP`` (and ``rank1_local``, ``mAP_local`` on the local-part-only
        identities, ``None`` where the world has none), ``train_seconds``, ``parameters``,
        ``test_time_parameters``, ``feat_dim``, ``macs`` (forward multiply-accumulates per image),
        ``history`` (one dict per epoch), and per arm kind: ``part_rank1`` (per part and per
        branch feature, EnsembleNet arms), ``activations`` (with ``activation_paths``),
        ``members`` (each member's metrics, ``member_iters_per_epoch``).
    """
    import time

    from reid_core.engine import (
        TrainConfig,
        Trainer,
        build_test_loader,
        build_train_loader,
        evaluate_reid,
        seed_everything,
    )
    from reid_core.evaluation import compute_distance_matrix
    from reid_core.models import part_activation_maps

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {sorted(ARMS)}")
    spec = ARMS[arm]
    seed_everything(seed)
    dev = torch.device(device)
    (train, query, gallery, num_classes), info = load_split(data, split)
    height, width = recipe["height"], recipe["width"]
    preload = recipe["preload"]
    with contextlib.redirect_stderr(io.StringIO()):  # the preload bars: a run renders nothing
        train_loader = build_train_loader(
            train,
            height,
            width,
            batch_size=recipe["ids_per_batch"] * recipe["num_instances"],
            num_instances=recipe["num_instances"],
            preload=preload,
            seed=seed,
            random_erasing_p=recipe["random_erasing_p"],
            batch_augment=recipe["batch_augment"],
            device=dev,
        )
        query_loader = build_test_loader(query, height, width, preload=preload)
        gallery_loader = build_test_loader(gallery, height, width, preload=preload)
    local_mask = None
    if info is not None:
        local = local_part_only_pids(info.identities)
        local_mask = np.isin(np.array([pid for _, pid, _ in query]), sorted(local))
    head = {k: recipe[k] for k in ("reduction_dim", "reduction_relu", "trunk_end")}

    def fit(
        model: torch.nn.Module, run_seed: int, max_iters: int | None, folder: str | None
    ) -> tuple[torch.nn.Module, list, float]:
        seed_everything(run_seed)
        config = TrainConfig(
            epochs=recipe["epochs"],
            optimizer=recipe["optimizer"],
            lr=recipe["lr"],
            weight_decay=recipe["weight_decay"],
            scheduler=recipe["scheduler"],
            milestones=recipe["milestones"],
            warmup_epochs=recipe["warmup_epochs"],
            max_iters_per_epoch=max_iters,
            seed=run_seed,
            progress=False,
            precision=recipe["precision"],
            checkpoint_dir=folder,
        )
        trainer = Trainer(model, _criterion, train_loader, config, device=dev)
        start = time.perf_counter()
        history = trainer.fit()
        return trainer.model, history, time.perf_counter() - start

    def evaluate(model: torch.nn.Module) -> EvalResult:
        return evaluate_reid(
            model,
            query_loader,
            gallery_loader,
            metric="euclidean",
            flip=recipe["flip_test"],
            device=dev,
            progress=False,
            precision=recipe["precision"],
        )

    def build(run_seed: int, arm_spec: ArmSpec) -> torch.nn.Module:
        seed_everything(run_seed)  # the new layers' initialisation
        return _build_model(arm_spec, num_classes, recipe["backbone"], weights, recipe["imagenet"], head)

    out: dict[str, Any] = {"arm": arm, "seed": seed, "num_classes": num_classes}
    if spec.kind == "members":
        single = build(seed, ArmSpec("ensemblenet", stripes=(1,)))
        matched = build(seed, ARMS[spec.match])
        macs_single, macs_matched = forward_macs(single, height, width), forward_macs(matched, height, width)
        del matched
        iters = recipe["max_iters_per_epoch"] or len(train_loader)
        member_iters = max(1, round(iters * macs_matched / (spec.members * macs_single)))
        results, seconds, params, test_params, histories = [], 0.0, 0, 0, []
        for k in range(spec.members):
            run_seed = seed + MEMBER_SEED_STRIDE * k
            model = single if k == 0 else build(run_seed, ArmSpec("ensemblenet", stripes=(1,)))
            folder = None if checkpoint_dir is None else f"{checkpoint_dir}/member{k}"
            model, history, secs = fit(model, run_seed, member_iters, folder)
            result = evaluate(model)
            groups = ensemblenet_parameter_groups(model)
            results.append(result)
            seconds += secs
            params += groups["total"]
            test_params += groups["test-time"]
            histories.append(history)
        query_feats = concat_features([r.query for r in results])
        gallery_feats = concat_features([r.gallery for r in results])
        joined = evaluate_distance(
            compute_distance_matrix(query_feats.features, gallery_feats.features, metric="euclidean"),
            query_feats,
            gallery_feats,
        )
        out.update(
            rank1=joined.metrics["rank1"],
            mAP=joined.metrics["mAP"],
            **_local_metrics(joined, local_mask),
            train_seconds=seconds,
            parameters=params,
            test_time_parameters=test_params,
            feat_dim=int(query_feats.features.shape[1]),
            macs=spec.members * macs_single,
            member_iters_per_epoch=member_iters,
            matched_macs=macs_matched,
            members=[{"rank1": r.metrics["rank1"], "mAP": r.metrics["mAP"]} for r in results],
            history=histories[0],
        )
        return out

    model = build(seed, spec)
    macs = forward_macs(model, height, width)
    model, history, seconds = fit(model, seed, recipe["max_iters_per_epoch"], checkpoint_dir)
    result = evaluate(model)
    if spec.kind == "bnneck":
        params = count_parameters(model)
        test_params = count_parameters(model, exclude=("classifier",))
    else:
        groups = ensemblenet_parameter_groups(model)
        params, test_params = groups["total"], groups["test-time"]
    out.update(
        rank1=result.metrics["rank1"],
        mAP=result.metrics["mAP"],
        **_local_metrics(result, local_mask),
        train_seconds=seconds,
        parameters=params,
        test_time_parameters=test_params,
        feat_dim=int(result.query.features.shape[1]),
        macs=macs,
        history=history,
    )
    if spec.kind == "ensemblenet":
        pieces = part_feature_slices(len(spec.stripes), recipe["reduction_dim"], spec.stripes)
        if len(spec.stripes) > 1:
            pieces += branch_feature_slices(len(spec.stripes), recipe["reduction_dim"], spec.stripes)
        part_rank1 = []
        for piece in pieces:
            q = slice_features(result.query, piece.columns)
            g = slice_features(result.gallery, piece.columns)
            res = evaluate_distance(compute_distance_matrix(q.features, g.features, metric="euclidean"), q, g)
            part_rank1.append({"label": piece.label, "rank1": res.metrics["rank1"], **_local_metrics(res, local_mask)})
        out["part_rank1"] = part_rank1
        if activation_paths:
            from reid_core.data import build_transforms, read_image

            to_tensor = build_transforms(height, width, is_train=False)
            images = torch.stack([to_tensor(read_image(path)) for path in activation_paths])  # (N, 3, H, W)
            out["activation_images"] = images
            out["activations"] = part_activation_maps(model, images.to(dev))
    return out


def run_group(runs: Sequence[Mapping[str, Any]], **shared: Any) -> list[dict[str, Any]]:
    """Several :func:`train_and_evaluate` calls in one process, one after another.

    Each run seeds itself, so its result does not depend on the group it is in; grouping only
    saves the cost of starting a process and reading the images once per run.
    """
    return [train_and_evaluate(**{**shared, **run}) for run in runs]
