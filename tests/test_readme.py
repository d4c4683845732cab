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


def test_the_contents_list_every_section_and_point_at_it():
    """The README's Contents: one entry per ## and ### heading, in order, each linking to
    the anchor GitHub makes of it."""
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    headings = [
        line.lstrip("#").strip()
        for line in text.splitlines()
        if line.startswith(("## ", "### ")) and line != "## Contents"
    ]
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"- \[(.+?)\]\(#(.+?)\)", contents)

    def anchor(title: str) -> str:
        return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")

    assert [title for title, _ in entries] == headings
    assert all(link == anchor(title) for title, link in entries)
