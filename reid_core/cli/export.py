"""``reid export``: the model's embedding as ONNX, checked with onnxruntime, with CPU latencies.

Example:
    reid export --model baseline.pt --onnx baseline.onnx
"""

from __future__ import annotations

import argparse

from reid_core.cli.common import CLIError, load_from_args

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the embedding to ONNX and check it with onnxruntime",
        description="Export the model's embedding (input: normalised images (batch, 3, H, W); output: "
        "(batch, D); dynamic batch axis) to ONNX. onnxruntime must reproduce PyTorch within "
        "--tolerance on two batch sizes, else no file is written. Prints the CPU latency per image "
        "of both. Needs the onnx extra: pip install 'reid_core[onnx]'.",
    )
    parser.add_argument("--model", required=True, metavar="CKPT", help="a model file written by reid_core")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |onnxruntime - PyTorch| (default 1e-4)")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs=2,
        default=(2, 5),
        metavar=("B1", "B2"),
        help="the two batch sizes compared (default 2 5)",
    )
    parser.add_argument("--latency-batch", type=int, default=8, help="batch size of the timing runs (default 8)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per runtime (default 10)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of both runtimes while timing (default: PyTorch's setting)",
    )


def run(args: argparse.Namespace) -> int:
    from reid_core.export import export_onnx

    if not str(args.onnx).endswith(".onnx"):
        raise CLIError(f"--onnx {args.onnx}: the file name must end in .onnx")
    args.device, args.batch_size = "cpu", 1  # export and timing run on the CPU
    loaded = load_from_args(args)
    report = export_onnx(
        loaded,
        args.onnx,
        opset=args.opset,
        check_batch_sizes=tuple(args.batch_sizes),
        tolerance=args.tolerance,
        latency_batch=args.latency_batch,
        latency_repeats=args.repeats,
        threads=args.threads,
    )
    print(report.format())
    return 0
