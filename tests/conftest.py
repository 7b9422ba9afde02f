"""Shared fixtures. Tests that need ../shared/data skip with the reason when it is absent."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gearsight.data.paths import dataset_dir, shared_data_dir

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config) -> str:
    """Name the precision this run trains in: results differ between bf16 and fp32 CPUs, so a log
    must say which it was. ``GEARSIGHT_AMP=off|bf16`` forces what ``amp: auto`` means everywhere
    (subprocesses inherit it); tests that compare numbers pin their precision explicitly."""
    from gearsight.train import AMP_ENV, cpu_has_fast_bf16

    native = "yes" if cpu_has_fast_bf16() else "no (bf16 is emulated, slow)"
    forced = os.environ.get(AMP_ENV)
    mode = f"{AMP_ENV}={forced} (forced: amp=auto trains in {forced})" if forced else "auto (fp32 on this CPU)"
    return f"gearsight amp: {mode}; CPU native bf16: {native}"


def pytest_terminal_summary(terminalreporter) -> None:
    # Repeated at the end: `make test` runs pytest -q, which hides the header.
    terminalreporter.write_line(pytest_report_header(None))


def require_dataset(name: str) -> Path:
    path = dataset_dir(name)
    if path is None:
        pytest.skip(f"dataset {name!r} not available: {shared_data_dir() / name} is absent (set GEARSIGHT_DATA)")
    return path


@pytest.fixture(scope="session")
def gear_dir() -> Path:
    return require_dataset("gear")


def run_cli(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m gearsight ARGS`` as a real subprocess and return the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "gearsight", *map(str, args)],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"gearsight {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def write_gear_subset(gear_dir: Path, out: Path, classes: tuple[str, ...], quota: dict[str, int]) -> Path:
    """A CSV (path,label,split) of the first ``quota[split]`` photos per class and split of THE split.csv."""
    taken: dict[tuple[str, str], int] = {}
    rows = []
    with open(gear_dir / "split.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["label"], row["split"])
            if row["label"] in classes and taken.get(key, 0) < quota[row["split"]]:
                taken[key] = taken.get(key, 0) + 1
                rows.append([str(gear_dir / row["path"]), row["label"], row["split"]])
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    return out
