"""Peak RSS of pasting N CenterMask masks (28x28) into a 12 MP (3000x4000) photo: the paste of
maskkit/structures.py at a given git revision, in a fresh process (issue #14 item 1).

    PYTHONPATH=$PWD python benchmarks/paste_memory.py [REV] [N]   # REV: a commit or "worktree"
"""

from __future__ import annotations

import importlib.util
import resource
import subprocess
import sys
import tempfile

import torch


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "worktree" else ""
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if rev:
        text = subprocess.run(
            ["git", "show", f"{rev}:maskkit/structures.py"], capture_output=True, text=True, check=True
        ).stdout
        f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        f.write(text)
        f.close()
        spec = importlib.util.spec_from_file_location("structures_at_rev", f.name)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        paste = mod.paste_masks_in_image
    else:
        from maskkit.structures import paste_masks_in_image as paste
    torch.manual_seed(0)
    h, w = 3000, 4000
    xy = torch.rand(n, 2) * torch.tensor([w * 0.8, h * 0.8])
    boxes = torch.cat([xy, xy + torch.rand(n, 2) * 400 + 20], 1)  # ordinary objects: 20-420 px
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = paste(torch.rand(n, 28, 28), boxes, (h, w))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"rev={rev or 'worktree'} n={n} image={h}x{w} output={out.numel() * 4 / 2**20:.0f} MiB "
        f"peak_rss={peak:.0f} MiB (before paste {base:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
