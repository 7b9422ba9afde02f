"""Moved: the config language to gearsight.cntk.config, ``build_transform`` and ``transforms_from_config``
(which build transforms) to gearsight.cntk.transforms. This old path stays one release with all of
its names (README, "Moved modules")."""
import warnings

from gearsight._moved import message
from gearsight.cntk.config import find_pipelines, parse_config  # noqa: F401
from gearsight.cntk.transforms import build_transform, transforms_from_config  # noqa: F401

warnings.warn(message(__name__, "gearsight.cntk.config and gearsight.cntk.transforms"), DeprecationWarning,
              stacklevel=2)
