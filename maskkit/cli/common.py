"""Flags shared by several verbs, and turning them into library arguments."""

from __future__ import annotations

import argparse

from maskkit.data.coco import CocoDataset, open_split

__all__ = ["add_data_arguments", "dataset_from_args", "add_device_argument", "add_set_argument"]


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
