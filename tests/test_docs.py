"""The README is a short front page and every relative link in it and in docs/ resolves.

Parses Markdown links ``[text](target)`` in README.md and docs/*.md; each target that is
not a URL must name a file or folder of the repository (relative to the linking file),
and a ``#fragment`` must name a heading of the target file. The module map of
docs/architecture.md names every ``wespeaker_py/bin/`` module.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# the module map's row of the bin/ modules: "| | `wespeaker_py/bin/<name>.py` | ...: a, b |"
BIN_ROW = re.compile(r"^\|\s*\|\s*`wespeaker_py/bin/<name>\.py`\s*\|([^|]*)\|\s*$", re.M)
MAX_README_LINES = 250
FRESH_MACHINE_COMMANDS = (
    'pip install -e ".[diar]" && (cd examples/mini && bash run.sh)',
    'pip install -e ".[test,ssl]"',
    "python -m pytest -q -n 2 --dist loadfile",
)
CI_SCRIPT = ROOT / ".ci" / "run"
# [text](target) or [text](target "title"); images too. Code spans are removed first.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files() -> List[Path]:
    return [README] + sorted((ROOT / "docs").glob("*.md"))


def unfenced_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """Lines outside fenced code blocks, as written."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, line


def prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code spans removed."""
    for number, line in unfenced_lines(path):
        yield number, CODE_SPAN.sub("", line)


def links(path: Path) -> Iterator[Tuple[int, str]]:
    for number, line in prose_lines(path):
        for match in LINK.finditer(line):
            yield number, match.group(1)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: lower case, code spans kept without their
    backticks, punctuation but hyphens dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(path: Path) -> set:
    """GitHub's anchors of a Markdown file's headings (a repeated one gets -1, -2, ...)."""
    anchors: set = set()
    for _, line in unfenced_lines(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            anchor = base = heading_anchor(heading.group(1))
            repeat = 0
            while anchor in anchors:
                repeat += 1
                anchor = f"{base}-{repeat}"
            anchors.add(anchor)
    return anchors


def test_heading_anchors_follow_github(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Flags of `wespeaker-py diarize`\n```\n# not a heading\n```\n"
                    "## Scoring: AS-Norm & QMF\n## Scoring: AS-Norm & QMF\n", encoding="utf-8")
    assert heading_anchors(page) == {"flags-of-wespeaker-py-diarize", "scoring-as-norm--qmf",
                                     "scoring-as-norm--qmf-1"}


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def test_docs_folder_exists_with_architecture_first_page():
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert len(markdown_files()) > 5


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    broken = []
    for number, target in links(path):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{path.name}:{number}: {target} (no such file)")
        elif not resolved.is_relative_to(ROOT):
            broken.append(f"{path.name}:{number}: {target} (outside the repository)")
        elif fragment and resolved.suffix == ".md" and fragment not in heading_anchors(resolved):
            broken.append(f"{path.name}:{number}: {target} (no heading #{fragment})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for _, target in links(README) if not is_external(target)}
    unlinked = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if page not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_is_a_short_front_page_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    for command in FRESH_MACHINE_COMMANDS:
        assert command in text, f"README lacks the command: {command}"


def test_the_ci_runs_the_readmes_test_command():
    test_command = FRESH_MACHINE_COMMANDS[-1]
    assert test_command in CI_SCRIPT.read_text(encoding="utf-8").splitlines()


def test_the_ci_runs_the_readmes_main_command_and_it_leaves_the_shell_where_it_was():
    install, _, recipe = FRESH_MACHINE_COMMANDS[0].partition(" && ")
    # the README's next commands run from the repository root, so the recipe runs in a
    # subshell: a reader following the page in one terminal is not left in examples/mini
    assert recipe.startswith("(") and recipe.endswith(")"), recipe
    ci = CI_SCRIPT.read_text(encoding="utf-8")
    assert f"python -m {install}" in ci and recipe in ci


def listed_bin_modules(architecture: str) -> List[str]:
    """The module names after the colon of the module map's ``bin/<name>.py`` row."""
    rows = BIN_ROW.findall(architecture)
    assert len(rows) == 1, f"architecture.md has {len(rows)} rows for wespeaker_py/bin/<name>.py"
    return [name.strip() for name in rows[0].partition(":")[2].split(",")]


def test_architecture_lists_every_bin_module():
    modules = sorted(path.stem for path in (ROOT / "wespeaker_py" / "bin").glob("*.py")
                     if path.stem != "__init__")
    listed = listed_bin_modules(ARCHITECTURE.read_text(encoding="utf-8"))
    assert sorted(listed) == modules, (
        f"docs/architecture.md's bin/ row lacks {sorted(set(modules) - set(listed))} "
        f"and names {sorted(set(listed) - set(modules))}, which wespeaker_py/bin/ lacks")
