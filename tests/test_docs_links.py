"""Every relative link of the README and docs/*.md leads to a file of the repository, and a link
with `#anchor` to a heading of that file (GitHub's anchors: lower case, punctuation dropped,
spaces as hyphens)."""

from __future__ import annotations

import glob
import os
import re

import pytest

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def documents() -> list[str]:
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def relative_links(path: str) -> list[str]:
    """The link targets of a Markdown file outside code blocks, web addresses left out."""
    with open(path) as f:
        text = FENCE.sub("", f.read())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: "Today's baselines, w/o and w/ RSG" -> todays-baselines-wo-and-w-rsg."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    with open(path) as f:
        text = FENCE.sub("", f.read())
    return {anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def broken_links(path: str) -> list[str]:
    broken = []
    for target in relative_links(path):
        file, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.isfile(resolved):
            broken.append(f"{target}: no file {os.path.relpath(resolved, ROOT)}")
        elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {os.path.relpath(resolved, ROOT)}")
    return broken


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_lead_somewhere(path):
    assert not broken_links(path), f"{os.path.relpath(path, ROOT)}: " + "; ".join(broken_links(path))


def test_the_readme_links_the_docs():
    assert len(relative_links(documents()[0])) >= 10


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path):
    (tmp_path / "b.md").write_text("# A heading, with `code`\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#a-heading-with-code) [gone](c.md) [wrong](b.md#other) [web](https://x.org/y)\n"
                    "```\n[in code](nowhere.md)\n```\n[here](#top)\n# Top\n")
    assert broken_links(str(page)) == ["c.md: no file " + os.path.relpath(str(tmp_path / "c.md"), ROOT),
                                       "b.md#other: no heading #other in " + os.path.relpath(str(tmp_path / "b.md"), ROOT)]
