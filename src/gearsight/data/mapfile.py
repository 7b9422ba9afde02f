"""Moved: the map-file parser to gearsight.cntk.mapfile, ``MapFileDataset`` to gearsight.cntk.dataset.
This old path stays one release with the names it had (README, "Moved modules")."""
import warnings

from gearsight._moved import message
from gearsight.cntk.dataset import MapFileDataset, Skipped  # noqa: F401
from gearsight.cntk.mapfile import ZIP_SEP, MapEntry, read_map_file, read_source_bytes  # noqa: F401

warnings.warn(message(__name__, "gearsight.cntk.mapfile and gearsight.cntk.dataset"), DeprecationWarning,
              stacklevel=2)
