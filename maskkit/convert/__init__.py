"""Loading the authors' published weights (``maskkit convert``): safe readers and per-source
name mappings. See README "Pretrained weights"."""
