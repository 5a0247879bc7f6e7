"""Training: the flat config and the authors' YAML (``config``, ``builder``), data to
batches (``data``), AdamW/clip/clamp (``optim``), HDF5 checkpoints (``checkpoint``)
and the run loop of ``python3 -m snnsim.train`` (``train``)."""
