"""The docs are generated from the code or run as tests: no stale activation table, no undocumented name,
every ```python block runs and every command sample prints what it shows (tests/doc_examples.py)."""

import re
from pathlib import Path

import doc_examples
import pytest

import nnlab as nl
from nnlab import _docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _all_docs_text():
    parts = [p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))]
    readme = ROOT / "README.md"
    if readme.exists():
        parts.append(readme.read_text(encoding="utf-8"))
    return "\n".join(parts)


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_activations_md_is_up_to_date():
    path = DOCS / "activations.md"
    assert path.exists(), "docs/activations.md is missing; run `python -m nnlab._docs`"
    assert path.read_text(encoding="utf-8") == _docs.render_activations_md(), (
        "docs/activations.md is stale (the activation registry changed); run `python -m nnlab._docs`")


def test_docs_module_check_mode(capsys):
    assert _docs._main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_rendered_page_covers_every_builtin_entry():
    md = _docs.render_activations_md()
    for e in nl.activations.entries():
        if e.custom:
            continue
        assert f"## {e.name}\n" in md
        assert f"| `{e.name}` |" in md
        assert _docs.range_text(e.facts) in md
        for ident in e.facts.identities:
            assert ident in md
        for p in e.params:
            assert f"`{p.name}`" in md
    assert "## scaled" in md and nl.activations.SCALED_DOC[3] in md
    assert "register(" in md


def test_rendering_ignores_user_registered_activations():
    import math

    before = _docs.render_activations_md()
    nl.activations.register("doc_probe_act", lambda z: math.sin(z), lambda z: math.cos(z))
    try:
        assert _docs.render_activations_md() == before
    finally:
        nl.activations.unregister("doc_probe_act")


@pytest.mark.parametrize("name", sorted(set(nl.__all__)))
def test_every_public_name_is_documented(name):
    assert re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", _all_docs_text()), (
        f"nnlab.{name} is public (in nnlab.__all__) but no docs/*.md or README.md mentions it")


@pytest.mark.parametrize("name", nl.activations.names())
def test_every_activation_is_documented(name):
    assert re.search(rf"`{re.escape(name)}`", _all_docs_text()), f"activation {name!r} is not in the docs"


PAGES = doc_examples.pages()
MAX_NOT_RUN = 2  # blocks marked `<!-- not run: ... -->`: keep them rare


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run_as_written(page):
    """Every ```python block runs: a page's blocks in order in one namespace, in a fresh working
    directory; the README's blocks each on their own (a reader copies one of them)."""
    expected = sum(1 for b in doc_examples.blocks(page) if b.is_python and not b.not_run)
    with doc_examples.in_temp_dir():
        assert doc_examples.run_python_blocks(page, standalone=page == "README.md") == expected


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.is_console for b in doc_examples.blocks(p))])
def test_sample_outputs_match_the_commands(page):
    """Every `$ nnlab ...` sample in the docs prints what the docs show (`...` and `…` as placeholders)."""
    n, problems = doc_examples.check_console_blocks(page)
    assert n > 0
    assert not problems, ("\n\n".join(problems)
                          + f"\n(after an intended change: python tests/doc_examples.py --update {page})")


def test_blocks_not_run_are_marked_and_rare():
    marked, marks = [], 0
    for page in PAGES:
        marked += [f"{b.page}:{b.line} ({b.not_run})" for b in doc_examples.blocks(page) if b.not_run]
        marks += sum(1 for line in (ROOT / page).read_text(encoding="utf-8").splitlines()
                     if line.lstrip().startswith("<!--") and doc_examples.NOT_RUN.search(line))
    assert marks == len(marked), "a `<!-- not run: ... -->` mark must stand on the line before a fence"
    assert len(marked) <= MAX_NOT_RUN, f"too many blocks are not run: {marked}"


def test_every_command_sample_is_in_a_checked_block():
    """A `$ ` line only appears in blocks the tests run, and python code only in ```python fences."""
    for page in PAGES:
        for b in doc_examples.blocks(page):
            if b.is_python or b.is_console:
                continue
            assert not any(line.startswith("$ ") for line in b.lines), f"{page}:{b.line}: a command sample " \
                "must start its block (first line `$ ...`) to be compared"
            assert b.lang not in ("py", "pycon", "python3", "ipython"), f"{page}:{b.line}: use ```python"


@pytest.mark.parametrize("expected, actual, ok", [
    (["a", "b"], "a\nb\n", True),
    (["a", "b"], "a\nc\n", False),
    (["a", "..."], "a\nb\nc\n", True),
    (["a", "[...]", "c"], "a\nc\n", True),
    (["a", "...", "c"], "a\nb\nd\n", False),
    (["took … s"], "took 1.25 s\n", True),
    (["took … s"], "took 1.25 ms\n", False),
    (["x  "], "x\n", True),
    (["a"], "a\nb\n", False),
])
def test_sample_output_placeholders(expected, actual, ok):
    assert doc_examples.matches(expected, actual) is ok


def test_backprop_page_states_the_equations():
    text = (DOCS / "backprop.md").read_text(encoding="utf-8")
    for formula in ["Z_l = A_{l-1} W_l + b_l", "A_l = f_l(Z_l)", "E_L = ∂L/∂Z_L",
                    "E_l = (E_{l+1} W_{l+1}ᵀ) ⊙ f_l'(Z_l)", "∂L/∂W_l = A_{l-1}ᵀ E_l", "∂L/∂b_l = Σ_rows E_l",
                    "layer_errors", "eps = 1e-6", "atol = 1e-8", "rtol = 1e-5"]:
        assert formula in text, formula
    for loss in nl.losses.names():
        assert f"`{loss}`" in text
    assert (nl.gradcheck.EPS, nl.gradcheck.ATOL, nl.gradcheck.RTOL) == (1e-6, 1e-8, 1e-5)


def _commands(group, path=("nnlab",)):
    import click

    for name, cmd in sorted(group.commands.items()):
        yield " ".join(path + (name,))
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))


def test_cli_page_documents_every_command():
    from nnlab_cli.main import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in _commands(cli):
        assert f"`{command}" in text or f"$ {command}" in text, f"docs/cli.md does not document `{command}`"
