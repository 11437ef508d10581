"""Flags shared by several verbs, and turning them into library arguments."""

from __future__ import annotations

import argparse

from maskkit.data.coco import CocoDataset, open_split

__all__ = [
    "add_data_arguments",
    "dataset_from_args",
    "add_device_argument",
    "add_set_argument",
    "add_precision_arguments",
]


def add_data_arguments(parser: argparse.ArgumentParser, split_default: str = "val") -> None:
    """Add ``--data``, ``--split``, ``--ann`` and ``--images`` to a verb's parser."""
    g = parser.add_argument_group("dataset")
    g.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="COCO-style root: annotations/instances_<split>*.json beside <split>*/ image folders "
        "(COCO 2017: instances_val2017.json + val2017/; synthetic: instances_val.json + val/)",
    )
    g.add_argument(
        "--split",
        metavar="NAME",
        default=split_default,
        help=f"split name looked up under --data (default: {split_default})",
    )
    g.add_argument(
        "--ann", metavar="FILE", default=None, help="explicit COCO instances JSON (with --images; overrides --data)"
    )
    g.add_argument("--images", metavar="DIR", default=None, help="explicit image folder for --ann")


def dataset_from_args(args: argparse.Namespace) -> CocoDataset:
    """The dataset named by :func:`add_data_arguments`' flags."""
    return open_split(args.data, args.split, args.ann, args.images)


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto", help_prefix: str = "") -> None:
    parser.add_argument(
        "--device", default=default, help=f"{help_prefix}auto | cpu | cuda | cuda:N (default: {default})"
    )


def add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def add_precision_arguments(parser: argparse.ArgumentParser, default_note: str) -> None:
    """``--precision`` and ``--runtime`` (the precision and runtime a model runs in)."""
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default=None,
        help="fp32 | bf16 (native bfloat16: AMX-BF16 / AVX512-BF16; OpenVINO for exported files, PyTorch "
        "autocast for model files) | int8 (an INT8 file from `maskkit export --quantize int8`) | auto "
        f"(the fastest this CPU and file run natively). {default_note}",
    )
    parser.add_argument(
        "--runtime",
        choices=["onnxruntime", "openvino"],
        default=None,
        help="runtime of an exported .onnx file (default: onnxruntime for fp32, openvino for bf16 and int8)",
    )
