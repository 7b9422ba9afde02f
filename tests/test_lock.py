"""requirements.lock is the whole environment: a venv built by `make install` holds exactly its pins.

`make lock` compiles requirements.in (ranges from pyproject.toml) into the lock with uv; `make install`
syncs .venv to it. Here `pip freeze` of the running interpreter's venv must equal the lock, package
for package (the editable gearsight excluded), and every requirement of requirements.in and
pyproject.toml must be met by the lock's pins (else the lock is stale: run `make lock`).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
REQUIREMENTS_IN = ROOT / "requirements.in"
STAMP = Path(sys.prefix) / ".installed"  # written by the Makefile's install rule, last

PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*===?\s*(\S+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str, source: str) -> dict[str, str]:
    """``name==version`` lines -> {normalized name: version}; comments, blanks and ``-e``/options skipped."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        m = PIN.fullmatch(line)
        if not m:
            raise AssertionError(f"{source}:{n}: not a `name==version` pin: {raw!r}")
        pins[normalize(m.group(1))] = m.group(2)
    return pins


def lock_pins() -> dict[str, str]:
    return parse_pins(LOCK.read_text(), LOCK.name)


def test_parse_pins_normalizes_names_and_skips_the_rest():
    text = "# c\n-e .\n    # via x\nPyYAML==6.0.3\nprometheus_client==0.26.0\ntorch===2.13.0\n\n"
    assert parse_pins(text, "t") == {"pyyaml": "6.0.3", "prometheus-client": "0.26.0", "torch": "2.13.0"}
    with pytest.raises(AssertionError, match="not a `name==version` pin"):
        parse_pins("numpy>=2\n", "t")


def test_the_venv_holds_exactly_the_lock():
    if sys.prefix == sys.base_prefix or not STAMP.is_file():
        pytest.skip(f"{sys.prefix} is not a venv built by `make install` (no {STAMP.name} stamp in it)")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    installed = parse_pins(out, "pip freeze")
    locked = lock_pins()

    missing = sorted(set(locked) - set(installed))
    extra = sorted(set(installed) - set(locked))
    different = sorted(k for k in set(locked) & set(installed) if installed[k] != locked[k])
    problems = [f"missing (in the lock, not installed): {', '.join(f'{k}=={locked[k]}' for k in missing)}"] if missing else []
    if extra:
        problems.append(f"extra (installed, not in the lock): {', '.join(f'{k}=={installed[k]}' for k in extra)}")
    if different:
        problems.append("different: " + ", ".join(f"{k} {installed[k]} installed, {locked[k]} locked" for k in different))
    if any("+" in installed[k] for k in different):
        problems.append("(a local build such as torch 2.13.0+cpu comes from pip's find-links, /opt/wheels here; "
                        "`make install` installs with uv, which never looks there)")
    if problems:
        pytest.fail(f"{sys.prefix} differs from {LOCK.name} (`rm {STAMP} && make install` syncs it):\n  " + "\n  ".join(problems))


def test_the_lock_meets_requirements_in_and_pyproject():
    """A range or pin edited in pyproject.toml/requirements.in without `make lock` shows up here."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted: list[str] = []
    for raw in REQUIREMENTS_IN.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if m := re.fullmatch(r"-e\s+\.(?:\[([^\]]*)\])?", line):
            wanted += project["dependencies"]
            for extra in filter(None, (e.strip() for e in (m.group(1) or "").split(","))):
                wanted += project["optional-dependencies"][extra]
        elif line:
            wanted.append(line)
    assert wanted, f"{REQUIREMENTS_IN.name} names nothing"

    pins, env = lock_pins(), default_environment()
    problems = []
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        version = pins.get(normalize(req.name))
        if version is None:
            problems.append(f"{text}: not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: the lock pins {version}")
    if problems:
        pytest.fail(f"{LOCK.name} is stale (run `make lock`):\n  " + "\n  ".join(problems))
