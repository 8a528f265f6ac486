"""The ``reid`` command line (see :mod:`reid_core.cli.main`): extract, rank, evaluate, calibrate, export."""
