"""reid_core: the tested library behind reid-book.

Subpackages: ``data`` (dataset readers, SynthReID, transforms), ``samplers`` (PK, graph),
``losses``, ``models``, ``evaluation`` (CMC/mAP, re-ranking), ``alignment`` (AlignedReID's
shortest-path distance), ``retrieval`` (large galleries), ``engine`` (training, features).
"""

__version__ = "0.1.0"
