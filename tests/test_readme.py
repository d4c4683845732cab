"""The README's table of where each claim is checked names tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_test_the_readme_names_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Where each claim is checked") :]
    table = table[: table.index("\n## ")]
    named = 0
    current = ""
    for span in re.findall(r"`([^`]+)`", table):
        found = re.fullmatch(r"(test_\w+\.py|leaks\.py|conftest\.py)?(?:::([\w*]+))?", span)
        if found is None or not any(found.groups()):
            continue
        module, test = found.groups()
        current = module or current
        source = (REPO / "tests" / current).read_text(encoding="utf-8")
        if test:
            pattern = test.replace("*", r"\w*")
            assert re.search(rf"^(def |class ){pattern}\b|^{pattern} = ", source, re.M), (
                f"{current}::{test}"
            )
            named += 1
    assert named > 30
