"""The docs are generated or checked against the code: no stale activation table, no undocumented name."""

import re
from pathlib import Path

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


@pytest.mark.parametrize("page", ["backprop.md", "activations.md", "layers.md"])
def test_code_blocks_run(page):
    blocks = _python_blocks(DOCS / page)
    assert blocks, f"docs/{page} has no python example"
    ns = {}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), ns)  # noqa: S102 - our own documentation


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
