"""The plan of a SynthReID world: identities, splits, tracks and one spec per image.

Market-1501 rules (the book page ``book/datasets.md``) that the plan enforces:

- train ids and test ids are disjoint; every identity is seen by 2 or more cameras;
- query: for each test id, one image from each of its cameras that holds 2 or more of its
  images (so at most one per (id, camera), and the gallery keeps an image of the id in every
  camera it was seen by: each query has a cross-camera match);
- the gallery (``bounding_box_test``) holds the other test images, distractors (pid 0000) and
  junk (pid -1);
- names ``{pid:04d}_c{camera}s{session}_{frame:06d}_{box:02d}.jpg``, junk as ``-1_c...``.

Random numbers are drawn unconditionally in a fixed order, so two worlds that differ in one
knob (e.g. ``misalignment`` 0 vs 0.5) hold the same identities, cameras, views and poses and
differ only in what that knob controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.identities import FamilyMember, make_families
from reid_core.data.synthreid.scene import VIEWS, Camera, make_cameras

__all__ = [
    "ImageSpec",
    "Identity",
    "SynthReIDPlan",
    "plan_synthreid",
    "format_filename",
    "OCCLUDERS",
    "MAX_SHIFT_X",
    "MAX_SHIFT_Y",
    "MAX_LOG_SCALE",
    "BODY_FRACTION",
]

OCCLUDERS = ("pole", "box", "person")
MAX_SHIFT_X = 0.18  # box shift, fraction of the width, at misalignment = 1
MAX_SHIFT_Y = 0.15  # fraction of the height
MAX_LOG_SCALE = float(np.log(1.3))  # scale in [1/1.3, 1.3]
BODY_FRACTION = 0.86  # head-to-sole height / image height in a perfect box


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to draw one image (besides per-image texture and noise)."""

    index: int  # position in the plan; seeds the image's own random stream
    split: str  # "train" | "query" | "gallery"
    filename: str
    pid: int  # 1.. for identities, 0 for distractors, -1 for junk
    camera: int  # 1-based
    view: str  # one of VIEWS
    shift_x: float  # box shift, fraction of the width (+ = person to the right)
    shift_y: float  # fraction of the height (+ = person lower)
    scale: float  # person size / the perfect box's
    phase: float  # walking phase, radians
    occluder: str  # "none" or one of OCCLUDERS
    subject: str  # "identity" | "stranger" (not in the data set) | "none" (background only)


@dataclass(frozen=True)
class Identity:
    """An identity with its pid and split."""

    pid: int
    split: str  # "train" | "test"
    member: FamilyMember


@dataclass(frozen=True)
class SynthReIDPlan:
    """The whole world before drawing."""

    config: SynthReIDConfig
    identities: list[Identity]
    cameras: list[Camera]
    images: list[ImageSpec]


def format_filename(pid: int, camera: int, session: int, frame: int, box: int) -> str:
    """Market-1501 file name, e.g. ``0001_c1s1_000151_01.jpg`` or ``-1_c3s1_000201_01.jpg``."""
    pid_str = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_str}_c{camera}s{session}_{frame:06d}_{box:02d}.jpg"


class _Namer:
    """Hands out unique names: the box index counts people already in that camera frame."""

    def __init__(self) -> None:
        self.boxes: dict[tuple[int, int, int], int] = {}

    def __call__(self, pid: int, camera: int, session: int, frame: int) -> str:
        key = (camera, session, frame)
        box = self.boxes.get(key, 0) + 1
        if box > 99:  # two digits in the name; move to the next frame instead
            return self(pid, camera, session, frame + 1)
        self.boxes[key] = box
        return format_filename(pid, camera, session, frame, box)


def _identities(cfg: SynthReIDConfig) -> list[Identity]:
    rng = np.random.default_rng([cfg.seed, 1])  # independent of style: same people in a and b
    pids = rng.permutation(np.arange(1, cfg.num_ids + 1))
    out: list[Identity] = []
    first_family = 0
    for split, split_pids in (("train", pids[: cfg.num_train_ids]), ("test", pids[cfg.num_train_ids :])):
        members = make_families(
            len(split_pids),
            cfg.lookalike_family_size,
            cfg.lookalike_max_diffs,
            cfg.local_part_only_fraction,
            rng,
            first_family,
        )
        first_family = members[-1].family + 1
        # Shuffle pids over members so look-alikes do not sit on consecutive pids.
        for pid, member in zip(rng.permutation(split_pids).tolist(), members):
            out.append(Identity(int(pid), split, member))
    return sorted(out, key=lambda i: (i.split != "train", i.pid))


def plan_synthreid(cfg: SynthReIDConfig) -> SynthReIDPlan:
    """Decide every image of the world (deterministic in ``cfg``).

    Args:
        cfg: the validated config.

    Returns:
        The plan: identities (train first, by pid), cameras, and image specs in render order
        (train, then test ids' query/gallery images, then distractors, then junk).
    """
    identities = _identities(cfg)
    cameras = make_cameras(cfg.style, cfg.num_cameras, cfg.seed, cfg.camera_shift, cfg.blur, cfg.resolution_drop)
    rng = np.random.default_rng([cfg.seed, 3])
    namer = _Namer()
    images: list[ImageSpec] = []
    m = cfg.misalignment

    def add(
        split: str,
        pid: int,
        camera: int,
        session: int,
        frame: int,
        view: str,
        subject: str = "identity",
        shift: tuple[float, float, float] | None = None,
        occluder: str = "none",
        phase: float = 0.0,
    ) -> None:
        sx, sy, sc = shift if shift is not None else (0.0, 0.0, 1.0)
        images.append(
            ImageSpec(
                len(images),
                split,
                namer(pid, camera, session, frame),
                pid,
                camera,
                view,
                sx,
                sy,
                sc,
                phase,
                occluder,
                subject,
            )
        )

    for ident in identities:
        max_cams = min(cfg.num_cameras, cfg.images_per_id - 1)  # leaves one camera with 2+ images
        k = int(rng.integers(2, max_cams + 1))
        cams = np.sort(rng.choice(cfg.num_cameras, size=k, replace=False)) + 1  # (k,)
        counts = 1 + rng.multinomial(cfg.images_per_id - k, np.full(k, 1.0 / k))  # (k,)
        for cam, count in zip(cams.tolist(), counts.tolist()):
            camera = cameras[cam - 1]
            r_view = rng.random()
            cam_view = VIEWS[int(rng.choice(len(VIEWS), p=camera.view_probs))]
            view = cam_view if r_view < cfg.viewpoint else "front"
            session = int(rng.integers(1, 7))
            frames = int(rng.integers(0, 90000)) + np.cumsum(rng.integers(4, 30, size=count))  # (count,)
            query_pick = int(rng.integers(count))
            u = rng.uniform(-1.0, 1.0, size=(count, 3))  # (count, 3) shift x, shift y, log scale
            phases = rng.uniform(0.0, 2 * np.pi, size=count)  # (count,)
            occ_r = rng.random(count)  # (count,)
            occ_kind = rng.integers(len(OCCLUDERS), size=count)  # (count,)
            for j in range(count):
                if ident.split == "train":
                    split = "train"
                else:
                    split = "query" if (count >= 2 and j == query_pick) else "gallery"
                shift = (
                    m * MAX_SHIFT_X * u[j, 0],
                    m * MAX_SHIFT_Y * u[j, 1],
                    float(np.exp(m * MAX_LOG_SCALE * u[j, 2])),
                )
                occ = OCCLUDERS[occ_kind[j]] if occ_r[j] < cfg.occlusion_prob else "none"
                add(
                    split,
                    ident.pid,
                    cam,
                    session,
                    int(frames[j]),
                    view,
                    "identity",
                    (float(shift[0]), float(shift[1]), shift[2]),
                    occ,
                    float(phases[j]),
                )

    # Distractors (pid 0000): background, or a fragment of a stranger (IoU < 20% in Market).
    for _ in range(cfg.resolved_num_distractors):
        cam, session, frame = (
            int(rng.integers(1, cfg.num_cameras + 1)),
            int(rng.integers(1, 7)),
            int(rng.integers(0, 99000)),
        )
        mode, sign = int(rng.integers(3)), float(rng.choice([-1.0, 1.0]))
        a, b, ph, view = rng.random(), rng.random(), float(rng.uniform(0, 2 * np.pi)), VIEWS[int(rng.integers(4))]
        if mode == 0:
            add("gallery", 0, cam, session, frame, view, "none")
        elif mode == 1:  # mostly outside the box, sideways
            add(
                "gallery",
                0,
                cam,
                session,
                frame,
                view,
                "stranger",
                (sign * (0.5 + 0.3 * a), 0.3 * (b - 0.5), 1.0),
                phase=ph,
            )
        else:  # a close-up of part of a body
            add(
                "gallery",
                0,
                cam,
                session,
                frame,
                view,
                "stranger",
                (0.2 * (a - 0.5), sign * 0.35 * b, 2.2 + a),
                phase=ph,
            )
    # Junk (pid -1): people in badly fitted boxes (20-50% IoU in Market), ignored by evaluation.
    for _ in range(cfg.resolved_num_junk):
        cam, session, frame = (
            int(rng.integers(1, cfg.num_cameras + 1)),
            int(rng.integers(1, 7)),
            int(rng.integers(0, 99000)),
        )
        sx, sy = float(rng.choice([-1.0, 1.0])), float(rng.choice([-1.0, 1.0]))
        a, b, c, ph, view = (
            rng.random(),
            rng.random(),
            rng.random(),
            float(rng.uniform(0, 2 * np.pi)),
            VIEWS[int(rng.integers(4))],
        )
        scale = 0.55 + 0.15 * c if b < 0.5 else 1.45 + 0.25 * c
        add(
            "gallery",
            -1,
            cam,
            session,
            frame,
            view,
            "stranger",
            (sx * (0.25 + 0.15 * a), sy * (0.12 + 0.13 * b), scale),
            phase=ph,
        )
    return SynthReIDPlan(cfg, identities, cameras, images)
