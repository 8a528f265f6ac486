"""``reid extract``: the embedding of every image of a folder, saved as .npz or .parquet.

The file holds the image paths (relative to ``--images``, in sorted order) and one float32
embedding per image, as the model card defines it (field, flip averaging, normalisation).

* ``.npz``: arrays ``paths`` (N,) str, ``features`` (N, D) float32, and ``root``, ``metric``,
  ``model`` (0-d str). Read with ``numpy.load(path)``.
* ``.parquet``: columns ``path`` (string) and ``feature`` (fixed-size list of D float32); the
  schema metadata holds ``root``, ``metric`` and ``model``. Needs the ``parquet`` extra (pyarrow).

Example:
    reid extract --model baseline.pt --images my/crops --out feats.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reid_core.cli.common import CLIError, add_model_arguments, atomic_write, embed_images, list_images, load_from_args

__all__ = ["add_parser", "run", "FORMATS"]

FORMATS = (".npz", ".parquet")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="embed every image of a folder (npz or parquet)",
        description="Compute the model's embedding of every image under --images (recursively) and save the "
        "paths and features to --out (.npz, or .parquet with pyarrow installed).",
    )
    add_model_arguments(parser)
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, metavar="FEATS", help="output file, .npz or .parquet")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in FORMATS:
        raise CLIError(f"--out {out}: the file must end in {' or '.join(FORMATS)}")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401  (checked before the slow part)
        except ImportError as err:
            raise CLIError("--out *.parquet needs pyarrow: pip install 'reid_core[parquet]' (or use .npz)") from err
    loaded = load_from_args(args)
    root = Path(args.images)
    paths = list_images(root, "--images")
    feats = embed_images(loaded, paths, args.batch_size, desc="extract").numpy().astype(np.float32)  # (N, D)
    names = [p.relative_to(root).as_posix() for p in paths]
    meta = {"root": str(root.resolve()), "metric": loaded.card.metric, "model": str(args.model)}
    if out.suffix == ".npz":
        atomic_write(
            out,
            lambda h: np.savez(h, paths=np.array(names), features=feats, **{k: np.array(v) for k, v in meta.items()}),
        )
    else:
        _write_parquet(out, names, feats, meta)
    print(
        f"wrote {out}: {len(names)} images x {feats.shape[1]} features ({loaded.card.embedding_field}, "
        f"flip={loaded.card.flip}, normalize={loaded.card.normalize}, metric {loaded.card.metric})"
    )
    return 0


def _write_parquet(out: Path, names: list[str], feats: np.ndarray, meta: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = feats.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), type=pa.float32()), dim)
    table = pa.table({"path": pa.array(names, type=pa.string()), "feature": column})
    table = table.replace_schema_metadata({k: v.encode() for k, v in meta.items()})
    atomic_write(out, lambda h: pq.write_table(table, h))
