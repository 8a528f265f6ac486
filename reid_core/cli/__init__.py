"""The ``reid`` command line (see :mod:`reid_core.cli.main`): extract, rank, evaluate, calibrate, export.

Only :func:`main` is public: the verbs are reached through it (``reid VERB --help``).
"""

from reid_core.cli.main import main

__all__ = ["main"]
