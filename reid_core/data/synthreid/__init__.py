"""SynthReID: a procedural person re-ID world written to disk in Market-1501 layout.

* :mod:`~reid_core.data.synthreid.config`: the world's knobs (each cause of a paper's effect);
* :mod:`~reid_core.data.synthreid.identities`: pedestrians, their attributes and look-alike families;
* :mod:`~reid_core.data.synthreid.scene`: scene styles and cameras;
* :mod:`~reid_core.data.synthreid.plan`: which identity is seen by which camera, and how;
* :mod:`~reid_core.data.synthreid.draw` / :mod:`~reid_core.data.synthreid.render`: one image;
* :mod:`~reid_core.data.synthreid.world`: the whole dataset on disk (:func:`render_synthreid`);
* :mod:`~reid_core.data.synthreid.presets`: the sizes the chapters use;
* :mod:`~reid_core.data.synthreid.reader`: the reader (the Market-1501 one, plus metadata).

Chapters: all; ``book/datasets.md`` documents the world.
"""

from reid_core.data.synthreid.config import SynthReIDConfig
from reid_core.data.synthreid.presets import PROFILE_PRESETS, SYNTHREID_PRESETS, prepare_synthreid, preset_root
from reid_core.data.synthreid.reader import SynthReID
from reid_core.data.synthreid.world import RENDERER_VERSION, SynthReIDInfo, ensure_synthreid, render_synthreid

__all__ = [
    "PROFILE_PRESETS",
    "RENDERER_VERSION",
    "SYNTHREID_PRESETS",
    "SynthReID",
    "SynthReIDConfig",
    "SynthReIDInfo",
    "ensure_synthreid",
    "prepare_synthreid",
    "preset_root",
    "render_synthreid",
]
