"""Old import paths of moved modules: each stays one release as a two-line alias that warns.

``alias(__name__, "gearsight.new.path")`` in the old file makes the old name the new module itself
(``sys.modules``), so old imports, private names and monkeypatching all keep working; the warning
names the new path. README "Moved modules" lists them; they go in the release after next.
"""
from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    module = importlib.import_module(new)
    sys.modules[old] = module
    # stacklevel 3: past alias and the old module to the import statement (warnings skips importlib's frames)
    warnings.warn(message(old, new), DeprecationWarning, stacklevel=3)


def message(old: str, new: str) -> str:
    return f"{old} moved to {new}; import it from there (the old path goes in the next release)"
