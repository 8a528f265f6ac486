"""Named SynthReID worlds used by the chapters, so the main job can render them once up front.

Each chapter asks for a preset by name with :func:`prepare_synthreid`; ``tools/render_data.py``
renders every preset a profile uses before the notebooks run. A preset is only the keyword
arguments of :func:`reid_core.data.synthreid.render_synthreid`; rendering is deterministic, and
``ensure_synthreid`` skips a preset whose folder already records the same arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["SYNTHREID_PRESETS", "PROFILE_PRESETS", "prepare_synthreid", "preset_root"]

SYNTHREID_PRESETS: dict[str, dict[str, Any]] = {
    # a few dozen images: CI runs every notebook on these in seconds
    "smoke": dict(num_ids=16, images_per_id=6, num_cameras=3, seed=0, lookalike_family_size=2),
    "smoke_b": dict(num_ids=16, images_per_id=6, num_cameras=3, seed=1, style="b", lookalike_family_size=2),
    "smoke_aligned": dict(
        num_ids=16, images_per_id=6, num_cameras=3, seed=0, misalignment=0.0, lookalike_family_size=2
    ),
    # the book's main world: every cause switched on (basics, metric learning, EnsembleNet, AlignedReID)
    "synth": dict(num_ids=500, images_per_id=12, num_cameras=6, seed=0),
    # the same people with the detector misalignment switched off (AlignedReID's control)
    "synth_aligned": dict(num_ids=500, images_per_id=12, num_cameras=6, seed=0, misalignment=0.0),
    # many identities in look-alike families (Graph Sampling), style a for training
    "synth_gs": dict(
        num_ids=2400, images_per_id=6, num_cameras=6, seed=0, train_fraction=5 / 6, lookalike_family_size=6
    ),
    # the same people with no part-only differences between look-alikes (EnsembleNet's control)
    "smoke_nolocal": dict(
        num_ids=16, images_per_id=6, num_cameras=3, seed=0, lookalike_family_size=2, local_part_only_fraction=0.0
    ),
    "synth_nolocal": dict(num_ids=500, images_per_id=12, num_cameras=6, seed=0, local_part_only_fraction=0.0),
    # Graph Sampling's control: the same worlds with no look-alike families (every identity drawn on its own)
    "smoke_nofamily": dict(num_ids=16, images_per_id=6, num_cameras=3, seed=0, lookalike_family_size=1),
    "synth_gs_nofamily": dict(
        num_ids=2400, images_per_id=6, num_cameras=6, seed=0, train_fraction=5 / 6, lookalike_family_size=1
    ),
    # other people in the other scene style: the cross-domain test set
    "synth_b": dict(num_ids=500, images_per_id=12, num_cameras=6, seed=1, style="b"),
}

# which presets the main job renders up front, per notebook profile
PROFILE_PRESETS: dict[str, tuple[str, ...]] = {
    "smoke": ("smoke", "smoke_b", "smoke_aligned", "smoke_nolocal", "smoke_nofamily"),
    "synth": ("synth", "synth_aligned", "synth_gs", "synth_b", "synth_nolocal", "synth_gs_nofamily"),
    "paper": ("synth",),
}


def preset_root(data_root: str | os.PathLike[str], preset: str) -> Path:
    """Folder of a preset: ``data_root/synthreid/<preset>``."""
    if preset not in SYNTHREID_PRESETS:
        raise ValueError(f"unknown SynthReID preset {preset!r}; valid: {sorted(SYNTHREID_PRESETS)}")
    return Path(data_root) / "synthreid" / preset


def prepare_synthreid(data_root: str | os.PathLike[str], preset: str, **overrides: Any) -> Path:
    """Render preset ``preset`` under ``data_root/synthreid/<preset>`` unless already there.

    Args:
        data_root: the folder that holds the datasets.
        preset: a key of :data:`SYNTHREID_PRESETS`.
        **overrides: change a preset's arguments (the folder re-renders when they differ).

    Returns:
        The dataset folder, ready for :class:`reid_core.data.SynthReID`.
    """
    from reid_core.data.synthreid.world import ensure_synthreid

    root = preset_root(data_root, preset)
    ensure_synthreid(root, **{**SYNTHREID_PRESETS[preset], **overrides})
    return root
