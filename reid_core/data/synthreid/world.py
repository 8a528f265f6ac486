"""SynthReID: a procedural person re-ID world written to disk in Market-1501 layout.

Pedestrians are drawn with numpy masks (body shape, skin, hair, top and bottom garments with
colours and patterns, hem, shoes, bags) and seen by several cameras that differ in colour
cast, brightness, blur, resolution and viewpoint, through detector-style misaligned boxes,
sometimes behind an occluder. Families of look-alike identities share all but one or two
attributes. Each cause is a knob with an "off" value (:class:`SynthReIDConfig`), so every
chapter can show a paper's effect appear and vanish:

=================  ==========================================  =============================
chapter            knobs                                       effect
=================  ==========================================  =============================
basics (01)        camera_shift, blur, resolution_drop,        colour histograms fail across
                   viewpoint, occlusion_prob,                  cameras; a CNN learns
                   background_clutter
metric learning    train_fraction (test ids unseen)            embeddings hold on unseen ids
AlignedReID (03)   misalignment                                local alignment helps
EnsembleNet (04)   local_part_only_fraction                    part branches help
Graph Sampling     lookalike_family_size, lookalike_max_diffs  GS batches are hard
cross-domain       style ("a" vs "b")                          accuracy drops across styles
=================  ==========================================  =============================

Layout written under ``root`` (the book page ``book/datasets.md``)::

    bounding_box_train/  0001_c1s1_000151_01.jpg ...   train ids
    query/               at most one image per (test id, camera)
    bounding_box_test/   the other test images, distractors 0000_..., junk -1_...
    synthreid.json       config, counts, cameras, families and per-identity attributes
    synthreid_images.csv one row per image: split, file, pid, camera, view, box shift/scale,
                         occluder, subject

For figures, :func:`reid_core.data.synthreid.plan.plan_synthreid` gives the plan (identities,
cameras, one spec per image) and :func:`reid_core.data.synthreid.render.render_image` draws one
image in memory with the mask of the person's visible pixels.

Example:
    >>> info = render_synthreid("data/synthreid", num_ids=200, seed=0, style="a")
    >>> info.num_query_images, info.query_dir
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.plan import ImageSpec, SynthReIDPlan, plan_synthreid
from reid_core.data.synthreid.render import render_image
from reid_core.data.synthreid.scene import Camera
from reid_core.files import atomic_write_text

__all__ = ["render_synthreid", "ensure_synthreid", "SynthReIDInfo", "SynthReIDConfig", "RENDERER_VERSION"]

logger = logging.getLogger(__name__)

RENDERER_VERSION = 1  # bump when the drawing changes, so ensure_synthreid re-renders
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
INFO_FILE = "synthreid.json"
IMAGES_FILE = "synthreid_images.csv"


@dataclass(frozen=True)
class SynthReIDInfo:
    """What a SynthReID folder holds (read back from ``synthreid.json``).

    Attributes:
        root: the folder.
        config: the arguments it was rendered with (:meth:`SynthReIDConfig.to_dict`).
        num_train_ids, num_test_ids: identities per side.
        num_train_images, num_query_images, num_gallery_images: files per folder (the gallery
            count includes distractors and junk).
        num_distractors, num_junk: gallery images with pid 0000 / -1.
        identities: per identity: ``pid``, ``split``, ``family``, ``differs_from_base`` (the
            attribute groups changed from the family's base), ``local_part_only`` and
            ``attributes`` (see :class:`reid_core.data.synthreid.identities.Pedestrian`).
        families: per family: ``family``, ``split``, ``base_pid``, ``pids``.
        cameras: per camera: its colour gains, brightness, contrast, blur, resolution factor
            and view probabilities.
        rendered: True when this call rendered the images, False when they were reused.
    """

    root: Path
    config: dict[str, Any]
    num_train_ids: int
    num_test_ids: int
    num_train_images: int
    num_query_images: int
    num_gallery_images: int
    num_distractors: int
    num_junk: int
    identities: list[dict[str, Any]] = field(repr=False)
    families: list[dict[str, Any]] = field(repr=False)
    cameras: list[dict[str, Any]] = field(repr=False)
    rendered: bool = False

    @property
    def train_dir(self) -> Path:
        return self.root / SPLIT_DIRS["train"]

    @property
    def query_dir(self) -> Path:
        return self.root / SPLIT_DIRS["query"]

    @property
    def gallery_dir(self) -> Path:
        return self.root / SPLIT_DIRS["gallery"]

    @classmethod
    def from_json(cls, root: str | os.PathLike, rendered: bool = False) -> SynthReIDInfo:
        """Read ``root/synthreid.json``.

        Raises:
            FileNotFoundError: naming the file when it is missing.
        """
        root = Path(root)
        path = root / INFO_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a SynthReID folder (render it with render_synthreid)")
        data = json.loads(path.read_text())
        c = data["counts"]
        return cls(
            root,
            data["config"],
            c["train_ids"],
            c["test_ids"],
            c["train_images"],
            c["query_images"],
            c["gallery_images"],
            c["distractors"],
            c["junk"],
            data["identities"],
            data["families"],
            data["cameras"],
            rendered,
        )


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Set in each worker by the pool initializer, so chunks carry only their image specs.
_WORKER_STATE: dict[str, Any] = {}


def _init_worker(cfg: SynthReIDConfig, cameras: list[Camera], people: dict, root: str) -> None:
    _WORKER_STATE.update(cfg=cfg, cameras=cameras, people=people, root=root)


def _render_chunk(specs: list[ImageSpec]) -> int:
    s = _WORKER_STATE
    cfg: SynthReIDConfig = s["cfg"]
    for spec in specs:
        arr, _ = render_image(spec, s["people"].get(spec.pid), s["cameras"][spec.camera - 1], cfg)
        path = os.path.join(s["root"], SPLIT_DIRS[spec.split], spec.filename)
        Image.fromarray(arr).save(path, format="JPEG", quality=cfg.jpeg_quality)
    return len(specs)


def _prepare_root(root: Path) -> None:
    """Remove a previous SynthReID render from ``root``; refuse to touch anything else."""
    existing = [root / d for d in SPLIT_DIRS.values() if (root / d).exists()]
    if not existing:
        return
    if not (root / INFO_FILE).is_file():
        raise FileExistsError(
            f"{root} already holds {[p.name for p in existing]} but no {INFO_FILE}: it looks like "
            "another data set (e.g. Market-1501); render SynthReID into an empty folder"
        )
    (root / INFO_FILE).unlink()  # first: an interrupted clean-up must not look complete
    for d in existing:
        shutil.rmtree(d)
    (root / IMAGES_FILE).unlink(missing_ok=True)


def _write_metadata(root: Path, plan: SynthReIDPlan, counts: dict[str, int]) -> None:
    cfg = plan.config
    with open(root / IMAGES_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "filename", "pid", "camera", "view", "shift_x", "shift_y", "scale", "occluder", "subject"])
        for s in plan.images:
            w.writerow(
                [
                    s.split,
                    s.filename,
                    s.pid,
                    s.camera,
                    s.view,
                    f"{s.shift_x:.4f}",
                    f"{s.shift_y:.4f}",
                    f"{s.scale:.4f}",
                    s.occluder,
                    s.subject,
                ]
            )
    families: dict[int, dict[str, Any]] = {}
    for ident in plan.identities:
        fam = families.setdefault(
            ident.member.family, {"family": ident.member.family, "split": ident.split, "base_pid": None, "pids": []}
        )
        fam["pids"].append(ident.pid)
        if not ident.member.differs_from_base:
            fam["base_pid"] = ident.pid
    data = {
        "renderer_version": RENDERER_VERSION,
        "config": cfg.to_dict(),
        "layout": dict(SPLIT_DIRS),
        "counts": counts,
        "cameras": [asdict(c) for c in plan.cameras],
        "families": [families[k] for k in sorted(families)],
        "identities": [
            {
                "pid": i.pid,
                "split": i.split,
                "family": i.member.family,
                "differs_from_base": list(i.member.differs_from_base),
                "local_part_only": i.member.local_part_only,
                "attributes": i.member.pedestrian.to_dict(),
            }
            for i in plan.identities
        ],
    }
    atomic_write_text(root / INFO_FILE, json.dumps(data, indent=1))  # written last: its presence means "complete"


def _render(root: Path, cfg: SynthReIDConfig, workers: int | None, progress: bool) -> SynthReIDInfo:
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    workers = workers or _default_workers()
    plan = plan_synthreid(cfg)
    root.mkdir(parents=True, exist_ok=True)
    _prepare_root(root)
    for d in SPLIT_DIRS.values():
        (root / d).mkdir()
    people = {i.pid: i.member.pedestrian for i in plan.identities}
    specs = plan.images
    init_args = (cfg, plan.cameras, people, str(root))
    bar = tqdm(total=len(specs), desc=f"SynthReID {cfg.style}", unit="img", disable=not progress)
    workers = min(workers, max(1, len(specs) // 16))  # tiny worlds are faster in-process
    if workers == 1:
        _init_worker(*init_args)
        for start in range(0, len(specs), 64):
            bar.update(_render_chunk(specs[start : start + 64]))
    else:
        chunk = max(16, min(128, len(specs) // (workers * 8)))
        chunks = [specs[i : i + chunk] for i in range(0, len(specs), chunk)]
        # fork is cheap and needs no re-import (the workers use only numpy and PIL); spawn where
        # fork does not exist. The bytes are the same either way.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
            for n in pool.imap_unordered(_render_chunk, chunks):
                bar.update(n)
    bar.close()
    split_counts = {k: sum(1 for s in specs if s.split == k) for k in SPLIT_DIRS}
    counts = {
        "train_ids": cfg.num_train_ids,
        "test_ids": cfg.num_test_ids,
        "train_images": split_counts["train"],
        "query_images": split_counts["query"],
        "gallery_images": split_counts["gallery"],
        "distractors": sum(1 for s in specs if s.pid == 0),
        "junk": sum(1 for s in specs if s.pid == -1),
    }
    _write_metadata(root, plan, counts)
    return SynthReIDInfo.from_json(root, rendered=True)


def render_synthreid(
    root: str | os.PathLike,
    num_ids: int,
    num_cameras: int = 6,
    seed: int = 0,
    style: str = "a",
    *,
    images_per_id: int = 16,
    train_fraction: float = 0.5,
    height: int = 128,
    width: int = 64,
    misalignment: float = 0.5,
    occlusion_prob: float = 0.15,
    camera_shift: float = 1.0,
    blur: float = 1.0,
    resolution_drop: float = 1.0,
    viewpoint: float = 1.0,
    noise: float = 1.0,
    background_clutter: float = 1.0,
    lookalike_family_size: int = 4,
    lookalike_max_diffs: int = 2,
    local_part_only_fraction: float = 0.5,
    num_distractors: int | None = None,
    num_junk: int | None = None,
    jpeg_quality: int = 90,
    workers: int | None = None,
    progress: bool = True,
) -> SynthReIDInfo:
    """Render a SynthReID world into ``root`` in Market-1501 layout (see the module docstring).

    The files are a pure function of the arguments other than ``workers`` and ``progress``:
    the same arguments give the same bytes. A previous SynthReID render in ``root`` is
    replaced; a folder that holds another data set's split folders is refused.

    Args:
        root: output folder (created if missing).
        num_ids, num_cameras, seed, style, images_per_id, train_fraction, height, width,
            misalignment, occlusion_prob, camera_shift, blur, resolution_drop, viewpoint, noise,
            background_clutter, lookalike_family_size, lookalike_max_diffs, local_part_only_fraction,
            num_distractors, num_junk, jpeg_quality: the world's knobs, documented in
            :class:`reid_core.data.synthreid.config.SynthReIDConfig`.
        workers: processes drawing images in parallel (default: the CPUs this process may use).
        progress: show a tqdm bar over the images.

    Returns:
        The folder's :class:`SynthReIDInfo` (``rendered=True``).

    Raises:
        ValueError: a knob out of range (the message names it), e.g. ``num_ids < 2``,
            ``num_cameras`` outside 2..9, an unknown ``style``.
        FileExistsError: ``root`` holds split folders that SynthReID did not write.
    """
    cfg = SynthReIDConfig(
        num_ids=num_ids,
        num_cameras=num_cameras,
        seed=seed,
        style=style,
        images_per_id=images_per_id,
        train_fraction=train_fraction,
        height=height,
        width=width,
        misalignment=misalignment,
        occlusion_prob=occlusion_prob,
        camera_shift=camera_shift,
        blur=blur,
        resolution_drop=resolution_drop,
        viewpoint=viewpoint,
        noise=noise,
        background_clutter=background_clutter,
        lookalike_family_size=lookalike_family_size,
        lookalike_max_diffs=lookalike_max_diffs,
        local_part_only_fraction=local_part_only_fraction,
        num_distractors=num_distractors,
        num_junk=num_junk,
        jpeg_quality=jpeg_quality,
    )
    return _render(Path(root), cfg, workers, progress)


def _is_complete(root: Path, data: dict[str, Any]) -> bool:
    c = data.get("counts", {})
    expected = {"train": c.get("train_images"), "query": c.get("query_images"), "gallery": c.get("gallery_images")}
    for split, d in SPLIT_DIRS.items():
        folder = root / d
        if not folder.is_dir() or sum(1 for _ in os.scandir(folder)) != expected[split]:
            return False
    return True


def ensure_synthreid(
    root: str | os.PathLike, *, workers: int | None = None, progress: bool = True, **kwargs: Any
) -> SynthReIDInfo:
    """Render SynthReID into ``root`` unless it already holds this exact world.

    It reuses the folder when ``root/synthreid.json`` records the same arguments (after
    defaults) and renderer version and the split folders hold the recorded number of files;
    otherwise it renders afresh (cleanly replacing a previous SynthReID render). It logs (and
    prints) which.

    Args:
        root: the folder.
        workers, progress: as in :func:`render_synthreid` (they do not change the files).
        **kwargs: :func:`render_synthreid`'s knobs (``num_ids`` is required).

    Returns:
        The folder's :class:`SynthReIDInfo`; ``rendered`` tells whether this call drew it.
    """
    cfg = SynthReIDConfig(**kwargs)
    root = Path(root)
    path = root / INFO_FILE
    reason = f"{path} is missing"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
        if data.get("config") != cfg.to_dict():
            old = data.get("config", {})
            changed = sorted(k for k in cfg.to_dict() if old.get(k, object()) != getattr(cfg, k))
            reason = f"the arguments changed ({', '.join(changed)})"
        elif data.get("renderer_version") != RENDERER_VERSION:
            reason = f"the renderer changed (version {data.get('renderer_version')} -> {RENDERER_VERSION})"
        elif not _is_complete(root, data):
            reason = "its image folders do not hold the recorded number of files"
        else:
            msg = f"SynthReID: reusing {root} (same arguments)"
            logger.info(msg)
            if progress:
                print(msg)
            return SynthReIDInfo.from_json(root, rendered=False)
    msg = f"SynthReID: rendering into {root} because {reason}"
    logger.info(msg)
    if progress:
        print(msg)
    return _render(root, cfg, workers, progress)
