"""The CLI registers every command module it ships, and refuses to start when one cannot be imported."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from gearsight.cli import COMMAND_MODULES

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gearsight"


def test_every_command_module_is_registered() -> None:
    shipped = {f"gearsight.commands.{p.stem}" for p in (PACKAGE / "commands").glob("*_cmd.py")}
    assert shipped == set(COMMAND_MODULES)


def _run_copy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m gearsight ARGS`` with the package imported from the copy in tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "import sys, gearsight, gearsight.cli; print(gearsight.__file__, file=sys.stderr); gearsight.cli.main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_command_module_missing_from_the_install_is_loud(tmp_path: Path) -> None:
    # A wheel that left export_cmd.py out: before, `export` vanished from --help without a word.
    shutil.copytree(PACKAGE, tmp_path / "gearsight", ignore=shutil.ignore_patterns("__pycache__"))
    intact = _run_copy(tmp_path, "--help")
    assert intact.returncode == 0 and str(tmp_path) in intact.stderr, intact.stderr
    assert "export" in intact.stdout

    (tmp_path / "gearsight" / "commands" / "export_cmd.py").unlink()
    broken = _run_copy(tmp_path, "--help")
    assert broken.returncode != 0
    assert "the command module gearsight.commands.export_cmd cannot be imported" in broken.stderr
    assert "usage:" not in broken.stdout


def test_a_command_module_with_a_broken_import_is_loud(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "gearsight", ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / "gearsight" / "commands" / "pack_cmd.py"
    module.write_text(module.read_text() + "\nimport gearsight_missing_dependency\n")
    broken = _run_copy(tmp_path, "pack", "--help")
    assert broken.returncode != 0
    assert "gearsight.commands.pack_cmd cannot be imported" in broken.stderr
    assert "gearsight_missing_dependency" in broken.stderr
