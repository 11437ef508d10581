"""Worker for tests/engine/test_ddp.py, launched by torchrun (or run plainly for 1 process):

    python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT VAL_ROOT

Trains the tiny model for 4 steps at global batch 4 and evaluates it on VAL_ROOT's val split
(distributed evaluation: each rank predicts its share, rank 0 scores the gathered results).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_engine_model import TinyDataset, TinyModel, tiny_config  # noqa: E402

from maskkit.data.coco import CocoDataset  # noqa: E402
from maskkit.engine.distributed import init_distributed  # noqa: E402
from maskkit.engine.training.loop import fit  # noqa: E402


def main(out: str, val_root: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = TinyModel()
    val = CocoDataset(Path(val_root) / "annotations" / "instances_val.json", Path(val_root) / "val")
    fit(tiny_config(max_iter=4), model, TinyDataset(), out, val_set=val, progress=False)
    if info.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
