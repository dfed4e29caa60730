"""The repository speaks of the product only: no references to the process that built it (tickets,
work periods, the product brief's sections) in code, comments, docs, help texts, messages or tests.
Design decisions and goals live in docs/design.md and docs/performance.md, and are cited there."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["nnlab", "cli", "tests", "docs", "benchmarks", ".ci", "README.md", "setup.cfg", "pyproject.toml", "tox.ini"]
TEXT_SUFFIXES = {".py", ".md", ".cfg", ".toml", ".ini", ".txt", ".json", ".sh", ""}
# built from pieces so that this file does not match itself
PROCESS_WORDS = [
    re.compile(r"\b" + "iss" + r"ues?\b", re.I),  # a ticket and its number
    re.compile(r"\b" + "ses" + r"sions?\b", re.I),  # a period of work
    re.compile(r"\b" + "SP" + r"EC\s+(\d|section)", re.I),  # the product brief's sections
    re.compile(r"\b" + "spe" + r"c(\.md)?\s+section", re.I),
    re.compile(r"\b" + "HEL" + r"PERS\b"),
    re.compile(r"\b" + "se" + r"eds?\s+0\d\d\b", re.I),  # the source texts are cited as [S0]..[S4]
]


def _files():
    for name in SCANNED:
        path = ROOT / name
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in paths:
            if "__pycache__" in p.parts or ".egg-info" in str(p) or p.suffix not in TEXT_SUFFIXES:
                continue
            yield p


def test_the_scan_sees_the_repository():
    names = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert {"README.md", "nnlab/benchmark.py", "cli/bench.py", "docs/design.md", "tests/test_docs.py", ".ci/run"} <= names


@pytest.mark.parametrize("pattern", PROCESS_WORDS, ids=lambda p: p.pattern)
def test_no_process_words(pattern):
    hits = []
    for p in _files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for k, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{k}: {line.strip()[:100]}")
    assert not hits, "process words in the repository:\n" + "\n".join(hits)


@pytest.mark.parametrize("text, bad", [("the goals of iss" + "ue 5", True), ("the last ses" + "sion", True),
                                       ("SP" + "EC section 4", True), ("SP" + "EC 2: E_l", True), ("--layers SPEC", False), ("se" + "ed 001: ...", True),
                                       ("--seed 0", False), ("seeds 0-4", False), ("the spec of a config", False)])
def test_the_patterns_catch_what_they_should(text, bad):
    assert any(p.search(text) for p in PROCESS_WORDS) is bad
