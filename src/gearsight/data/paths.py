"""Where data and work files live. No data is ever fetched implicitly."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """The read-only data folder: $GEARSIGHT_DATA, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("GEARSIGHT_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def dataset_dir(name: str) -> Path | None:
    """``shared_data_dir()/name`` if it exists, else None (caller decides: skip, or download)."""
    path = shared_data_dir() / name
    return path if path.is_dir() else None


def work_dir() -> Path:
    """Packed data, runs and downloads: $GEARSIGHT_WORK, else ``work/`` in the checkout (git-ignored)."""
    return Path(os.environ.get("GEARSIGHT_WORK", REPO_ROOT / "work"))
