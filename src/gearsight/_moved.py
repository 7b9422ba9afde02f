"""Old import paths of moved modules: each stays one release as a two-line alias that warns.

``alias(__name__, "gearsight.new.path")`` in the old file makes the old name the new module itself
(``sys.modules``), so old imports, private names and monkeypatching all keep working; the warning
names the new path. ``names(__name__, {...})`` does the same for single names that left a module
which stays (a module ``__getattr__``, PEP 562). README "Moved modules" lists them; they go in the
release after next.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable


def alias(old: str, new: str) -> None:
    module = importlib.import_module(new)
    sys.modules[old] = module
    # stacklevel 3: past alias and the old module to the import statement (warnings skips importlib's frames)
    warnings.warn(message(old, new), DeprecationWarning, stacklevel=3)


def message(old: str, new: str) -> str:
    return f"{old} moved to {new}; import it from there (the old path goes in the next release)"


def names(old_module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names moved out of ``old_module``: ``{"old_name": "new.module.name"}``.
    Each old name still resolves, to the new object, with a DeprecationWarning naming where it lives."""
    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, attr = moved[name].rpartition(".")
        warnings.warn(message(f"{old_module}.{name}", moved[name]), DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)

    return __getattr__
