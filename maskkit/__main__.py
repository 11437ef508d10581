"""``python -m maskkit`` (and ``torchrun -m maskkit train ...``)."""

from maskkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
