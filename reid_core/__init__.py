"""reid_core: the tested library behind reid-book.

Packages, from the ground up (a module imports only from its own floor or below;
``tests/test_layout.py`` checks it):

* ``arrays``, ``modes``, ``collectives``, ``files``: array inputs and their checks; switching modules to
  eval mode and back; what the processes of a ``torchrun`` job exchange (gathers, pooled means);
  files written atomically.
* Concepts, one home per idea: ``data`` (dataset readers, SynthReID, transforms, digits),
  ``samplers`` (PK, Graph Sampling), ``losses`` (pair losses, margin heads, criteria),
  ``models`` (backbones and one module per work), ``alignment`` (AlignedReID's shortest-path
  distance), ``evaluation`` (distances, CMC/mAP, re-ranking, large-gallery retrieval).
* ``engine``: training, schedules, checkpoints, loaders, feature extraction, evaluation of a model.
* ``book``: what the notebooks share (profiles, device and paths, results JSON, the papers'
  numbers, tables, common figures).
* ``chapters``: one package per paper chapter (experiment glue and figures); nothing imports them.

Import public names from the package facades, e.g. ``from reid_core.losses import ArcFace``.
"""

__version__ = "0.1.0"
