"""The knobs of SynthReID, the procedural re-ID world, in one validated dataclass.

Every cause of difficulty in the world is a knob with an "off" value, so a chapter can switch
a cause off and show its effect vanish (the table in :mod:`reid_core.data.synthreid.world`
says which knob carries which chapter's effect). :func:`reid_core.data.synthreid.render_synthreid`
takes these same names as keyword arguments and records them in ``root/synthreid.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SynthReIDConfig", "STYLE_NAMES", "MAX_CAMERAS", "MAX_PID"]

STYLE_NAMES = ("a", "b")
MAX_CAMERAS = 9  # Market-1501 file names hold the camera in one digit: ``_c(\d)``
MAX_PID = 9999  # four-digit pids


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if high is not None:
        ok = ok and value <= high
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


@dataclass(frozen=True)
class SynthReIDConfig:
    """Everything that decides the bytes SynthReID writes (the same config gives the same files).

    Args:
        num_ids: identities with a pid (train + test), at least 2.
        num_cameras: cameras, 2..9 (one digit in the file name). Market-1501 has 6.
        seed: the random seed; everything is a pure function of (config, seed).
        style: scene style, ``"a"`` (indoor mall: warm light, shop fronts) or ``"b"`` (street:
            cool, darker light, foliage and asphalt, blurrier low-resolution cameras). Train
            on one and test on the other for the cross-domain experiments (Graph Sampling
            chapter). Identities depend on ``seed`` only, so one seed gives the same people
            in both styles.
        images_per_id: images of each identity, spread over 2 or more cameras (Market-1501
            has about 17 per id in training); at least 3 so that every test id has a query
            and a cross-camera gallery match.
        train_fraction: share of the identities used for training; the rest are test ids.
            Both sides must get at least one id. Metric-learning chapter: test ids are never
            seen in training.
        height, width: image size in pixels (Market-1501 boxes are 128x64).
        misalignment: 0..1, detector-style box error: shifts of up to 18% of the width and
            15% of the height, and a scale change of up to 1.3x either way, all times this
            knob. 0 = every person centred at one scale. AlignedReID chapter.
        occlusion_prob: 0..1, chance that a pole, a box or another pedestrian covers part of
            the person. 0 = never. Basics and AlignedReID chapters.
        camera_shift: 0..1, strength of each camera's colour cast, brightness and contrast
            change (and of per-image lighting jitter). 0 = neutral cameras. Basics chapter
            (colour histograms fail across cameras).
        blur: 0..1, scales each camera's Gaussian blur. 0 = sharp. Basics chapter.
        resolution_drop: 0..1, scales each camera's down-then-up sampling factor (a
            low-resolution camera, like Market-1501's camera 6). 0 = full resolution.
        viewpoint: 0..1, chance that a track is seen from the camera's own view
            distribution (front, back, left or right side) instead of from the front. The view
            decides what is visible: a logo only from the front, a backpack mostly from the
            back, a shoulder bag on the left is hidden from the right side. 0 = all front.
            Basics and EnsembleNet chapters.
        noise: 0..1, scales the sensor noise (about 3/255 at 1). 0 = none.
        background_clutter: 0..1, blend between a plain backdrop shared by all cameras of
            the style (0) and each camera's own scene with shop fronts / trees, texture and
            its own wall and floor colours (1). Backgrounds fill half the box and differ per
            camera, so they dominate a colour histogram. Basics chapter.
        lookalike_family_size: identities per look-alike family; members share everything
            (body, skin, clothes, bag) but one or two attribute groups. 1 = no families.
            Graph Sampling chapter (its batches gather the nearest, look-alike classes).
        lookalike_max_diffs: most attribute groups in which a family member differs from the
            family's base identity (1 or 2 in the spirit of the brief; at least 1).
        local_part_only_fraction: 0..1, share of non-base family members that differ only in
            a local part (shoes, bag, hem of the top) rather than in a global attribute (top
            or bottom colour, pattern, sleeves, hair). EnsembleNet chapter (part features).
        num_distractors: gallery images with pid 0000 (background or a fragment of a person
            who is not in the data set), as Market-1501's distractors; ``None`` = 2 per test
            id. 0 = none.
        num_junk: gallery images with pid -1 (badly cropped people), dropped by the
            evaluation as in Market-1501; ``None`` = 1 per test id. 0 = none.
        jpeg_quality: JPEG quality of the written files.
    """

    num_ids: int
    num_cameras: int = 6
    seed: int = 0
    style: str = "a"
    images_per_id: int = 16
    train_fraction: float = 0.5
    height: int = 128
    width: int = 64
    misalignment: float = 0.5
    occlusion_prob: float = 0.15
    camera_shift: float = 1.0
    blur: float = 1.0
    resolution_drop: float = 1.0
    viewpoint: float = 1.0
    noise: float = 1.0
    background_clutter: float = 1.0
    lookalike_family_size: int = 4
    lookalike_max_diffs: int = 2
    local_part_only_fraction: float = 0.5
    num_distractors: int | None = None
    num_junk: int | None = None
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        _check_int("num_ids", self.num_ids, 2, MAX_PID)
        _check_int("num_cameras", self.num_cameras, 2, MAX_CAMERAS)
        _check_int("seed", self.seed, 0)
        if self.style not in STYLE_NAMES:
            raise ValueError(f"style must be one of {STYLE_NAMES}, got {self.style!r}")
        _check_int("images_per_id", self.images_per_id, 3)
        _check_fraction("train_fraction", self.train_fraction)
        if not 1 <= self.num_train_ids <= self.num_ids - 1:
            raise ValueError(
                f"train_fraction={self.train_fraction} gives {self.num_train_ids} train ids of "
                f"num_ids={self.num_ids}; both the train and the test side need at least one id"
            )
        _check_int("height", self.height, 32)
        _check_int("width", self.width, 16)
        for name in (
            "misalignment",
            "occlusion_prob",
            "camera_shift",
            "blur",
            "resolution_drop",
            "viewpoint",
            "noise",
            "background_clutter",
            "local_part_only_fraction",
        ):
            _check_fraction(name, getattr(self, name))
        _check_int("lookalike_family_size", self.lookalike_family_size, 1)
        _check_int("lookalike_max_diffs", self.lookalike_max_diffs, 1)
        if self.num_distractors is not None:
            _check_int("num_distractors", self.num_distractors, 0)
        if self.num_junk is not None:
            _check_int("num_junk", self.num_junk, 0)
        _check_int("jpeg_quality", self.jpeg_quality, 1, 100)

    @property
    def num_train_ids(self) -> int:
        """Identities in ``bounding_box_train``."""
        return int(round(self.num_ids * self.train_fraction))

    @property
    def num_test_ids(self) -> int:
        """Identities in ``query`` and ``bounding_box_test``."""
        return self.num_ids - self.num_train_ids

    @property
    def resolved_num_distractors(self) -> int:
        """``num_distractors`` with ``None`` resolved (2 per test id)."""
        return 2 * self.num_test_ids if self.num_distractors is None else self.num_distractors

    @property
    def resolved_num_junk(self) -> int:
        """``num_junk`` with ``None`` resolved (1 per test id)."""
        return self.num_test_ids if self.num_junk is None else self.num_junk

    def to_dict(self) -> dict[str, Any]:
        """The arguments as a JSON-ready dict (what ``synthreid.json`` records)."""
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The knob names, in order."""
        return tuple(f.name for f in fields(cls))
