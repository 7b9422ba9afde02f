"""Model factory: ``create_model(name, num_classes=..., **config)``.

Every architecture is registered by name (models/registry.py) so a model file can rebuild it from its
JSON header; importing this package registers them all.
"""
from __future__ import annotations

from gearsight.models.registry import TIMM_PREFIX, create_model, list_models, register_model  # noqa: F401

from gearsight.models import airnet, ensemble, gearnet  # noqa: F401  (registers their models)
from gearsight.models import tf_cifar10  # noqa: F401  (TensorFlow's CIFAR-10 tutorial CNN, --arch tf_cifar10)
