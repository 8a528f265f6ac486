"""The ``reid`` command: use a trained model on your own images.

Verbs (``reid VERB --help`` for each):

* ``extract``   embeddings of a folder of images (npz / parquet);
* ``rank``      ranked gallery for each query image, as an HTML page and CSV/JSON;
* ``evaluate``  CMC, mAP, mINP, MAP@R on a dataset, after protocol checks;
* ``calibrate`` same-person distance thresholds at chosen false-positive rates;
* ``export``    ONNX export checked against PyTorch with onnxruntime.

Installed as the console script ``reid`` (pyproject.toml) and runnable as ``python -m reid_core``.
Errors in the user's input end with a one-line message and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reid_core.cli import calibrate, evaluate, export, extract, rank
from reid_core.cli.common import CLIError
from reid_core.data import DatasetLayoutError, ImageLoadError
from reid_core.engine.checkpoint import CheckpointError
from reid_core.export import OnnxMismatchError

__all__ = ["build_parser", "main"]

VERBS = {"extract": extract, "rank": rank, "evaluate": evaluate, "calibrate": calibrate, "export": export}
# Errors caused by the input (a file, a folder, a setting, a model that does not export), reported
# in one line without a traceback.
USER_ERRORS = (
    CLIError,
    CheckpointError,
    DatasetLayoutError,
    ImageLoadError,
    FileNotFoundError,
    ImportError,
    OnnxMismatchError,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(
        prog="reid",
        description="Use a trained re-ID model on your own images. Verbs: " + ", ".join(VERBS) + ".",
        epilog="Run 'reid VERB --help' for the options of a verb.",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in VERBS.values():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``reid`` with ``argv`` (default: the command line); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb].run(args)
    except USER_ERRORS as err:
        print(f"reid {args.verb}: error: {err}", file=sys.stderr)
        return 2
