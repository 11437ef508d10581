"""Draw a dataset's ground truth (masks, boxes, class names; crowd regions grey) to PNG files.

``maskkit data show`` picks ``--num`` images at random (``--seed``) so annotations can be
checked by eye before training.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tqdm import tqdm

from maskkit.cli.common import add_data_arguments, dataset_from_args
from maskkit.errors import DataError, MaskkitError
from maskkit.viz import draw_instances, save_image


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, split_default="train")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the overlay PNGs")
    parser.add_argument(
        "--num", type=int, default=8, metavar="N", help="number of images to draw (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which images are picked at random (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise MaskkitError(f"--num must be at least 1, got {args.num}")
    ds = dataset_from_args(args)
    if len(ds) == 0:
        raise DataError(f"{ds.ann_file}: the dataset has no images")
    picks = sorted(random.Random(args.seed).sample(range(len(ds)), min(args.num, len(ds))))
    out = Path(args.out)
    for i in tqdm(picks, desc="drawing", unit="img"):
        image, target = ds.load_image(i), ds.load_target(i)
        drawn = draw_instances(image, target, class_names=ds.class_names)
        save_image(drawn, out / f"{Path(ds.image_info(i)['file_name']).stem}.png")
    print(f"wrote {len(picks)} overlays of {ds.ann_file.name} to {out}/")
    return 0
