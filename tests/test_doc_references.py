"""The code's pointers into docs/BENCHMARKS.md name sections that exist (models/gearnet.py cited a
"Gear recipe" section that never did)."""
from __future__ import annotations

import re

from conftest import REPO


def test_every_benchmarks_section_cited_in_the_source_exists():
    headings = [line.lstrip("#").strip() for line in (REPO / "docs" / "BENCHMARKS.md").read_text().splitlines()
                if line.startswith("#")]
    cited = []
    for path in sorted((REPO / "src").rglob("*.py")):
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))  # a citation may wrap across lines
        cited += [(path.name, m) for m in re.findall(r'BENCHMARKS\.md,? "([^"]+)"', text)]
    assert cited
    missing = [(name, section) for name, section in cited if not any(h.startswith(section) for h in headings)]
    assert not missing, missing
