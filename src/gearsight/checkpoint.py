"""Training checkpoints for ``--resume``: model, optimizer, scheduler, epoch and args in one
``torch.save`` file, loaded with ``weights_only=True`` (which refuses arbitrary objects).

The model file (weights + spec, what predict, export and serve read) is gearsight.modelfile; its
names are re-exported here for callers of the old path (serve/ among them), without a warning.
"""
from __future__ import annotations

from gearsight.files import atomic_write  # noqa: F401  (the old path of atomic_write)
from gearsight.modelfile import (FORMAT, FORMAT_VERSION, ModelSpec, load_model, read_spec,  # noqa: F401
                                 save_ensemble, save_model)
