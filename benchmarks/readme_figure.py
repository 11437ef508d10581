"""Draw the README's overlay figure: ground truth (top row) and a model's predictions (bottom
row) on the first validation images of a COCO-format dataset.

    python benchmarks/readme_figure.py --weights RUN/model_best.safetensors --data RUN/data \
        --out docs/images/demo_overlays.png [--n 4] [--score-thr 0.3] [--scale 1.5]

Uses the same inference path as `maskkit predict` (``infer_batches``) and the same drawing
(``maskkit.viz.draw_instances``); nothing is retouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from maskkit.checkpoint import load_model
from maskkit.data.coco import CocoDataset
from maskkit.engine.inference.predictor import infer_batches
from maskkit.viz import draw_instances


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True, help="dataset root with annotations/instances_val.json and val/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--score-thr", type=float, default=0.3)
    ap.add_argument("--scale", type=float, default=1.5, help="upscale each tile (small synthetic images)")
    args = ap.parse_args()

    root = Path(args.data)
    ds = CocoDataset(root / "annotations" / "instances_val.json", root / "val")
    model = load_model(args.weights)
    images = [ds.load_image(i) for i in range(min(args.n, len(ds)))]
    preds = list(infer_batches(model, images, batch_size=2))
    thr = float(getattr(model.cfg, "mask_threshold", 0.5))
    tiles = []
    for i, (image, pred) in enumerate(zip(images, preds)):
        target = ds.load_target(i)
        gt = {k: torch.as_tensor(target[k]).as_subclass(torch.Tensor) for k in ("boxes", "labels", "iscrowd")}
        gt["masks"] = target["masks"].to_dense()  # RLE until pixels are needed (maskkit.data.rle_masks)
        tiles.append(
            (
                draw_instances(image, gt, ds.class_names),
                draw_instances(image, pred, ds.class_names, args.score_thr, thr),
            )
        )
    h, w = tiles[0][0].shape[-2:]
    th, tw = int(h * args.scale), int(w * args.scale)
    sheet = Image.new("RGB", (tw * len(tiles), th * 2), "white")
    for col, pair in enumerate(tiles):
        for row, tile in enumerate(pair):
            im = Image.fromarray(tile.permute(1, 2, 0).numpy()).resize((tw, th), Image.NEAREST)
            sheet.paste(im, (col * tw, row * th))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)  # ~1/3 the bytes
    print(f"wrote {args.out} ({len(tiles)} images; top: ground truth, bottom: predictions >= {args.score_thr})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
