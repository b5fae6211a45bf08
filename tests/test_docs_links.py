"""The README and the guides under docs/: every relative link and #anchor resolves, and the README stays short.

Anchors are GitHub's heading slugs; links inside code (fenced blocks and `inline code`) are not links.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).+?\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def outside_fences(text: str) -> list[str]:
    """The lines of Markdown text outside its fenced code blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
        else:
            lines.append(line)
    return lines


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    return [INLINE_CODE.sub(" ", line) for line in outside_fences(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (markup dropped) lowercased, punctuation removed, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code."""
    return [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


def broken(path: Path) -> list[str]:
    """The relative links of one file whose file or #anchor does not exist."""
    bad = []
    for target in links(path):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked (no network in tests)
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_every_relative_link_resolves(path):
    assert broken(path) == []


def test_the_readme_links_into_each_guide_and_reference():
    targets = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    guides = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert guides <= targets, f"README links none of {sorted(guides - targets)}"
    assert "docs/images/studio.svg" in targets  # the screenshot


def test_the_readme_key_table_is_the_studio_guides():
    """The README shows the studio's main keys; docs/studio.md holds the same rows (one table, two places)."""
    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| **")]
    guide = (ROOT / "docs" / "studio.md").read_text(encoding="utf-8").splitlines()
    assert len(rows) >= 5
    assert [row for row in rows if row not in guide] == []


def test_the_readme_is_short():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference text into docs/"


def test_the_checker_sees_a_broken_link_and_an_unknown_anchor(tmp_path):
    (tmp_path / "guide.md").write_text("# A guide\n\n## Fine-tune (`helium train --init-from`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](guide.md#fine-tune-helium-train---init-from) [gone](missing.md) [bad](guide.md#nope)\n"
        "`[code](missing.md)` [web](https://example.com/x.md)\n```\n[fenced](missing.md)\n```\n"
    )
    assert broken(page) == ["missing.md (no such file)", "guide.md#nope (no heading #nope in guide.md)"]


@pytest.mark.slow
def test_the_screenshot_script_draws_the_studio_telling_a_story(tmp_path):
    """scripts/screenshot.py still drives the studio (it breaks when the studio's parts are renamed)."""
    spec = importlib.util.spec_from_file_location("screenshot", ROOT / "scripts" / "screenshot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "studio.svg"
    asyncio.run(script.shoot(out))
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "helium-default" in svg and "ready" in svg
    told = re.search(r"(\d+)(?:&#160;| )tokens", svg)  # the status line after the story
    assert told and int(told.group(1)) > 0
