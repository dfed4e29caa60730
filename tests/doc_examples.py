"""The documentation as executable examples: every fenced ``python`` block of README.md and docs/*.md,
and every sample output of a command (a fenced block whose first line is ``$ nnlab ...``).

Rules the pages follow (docs/design.md, "Documentation that runs"):

- A page's ``python`` blocks run in order in one namespace, in a fresh temporary working directory.
- A console block holds ``$ COMMAND`` lines, each followed by the output it prints (stdout and stderr
  as a terminal shows them). Commands: ``nnlab ...`` (run in-process through click's test runner),
  optionally ``| head -N`` or ``> FILE``; ``echo $?`` (the previous command's exit code);
  ``head -N FILE`` and ``cat FILE``. A page's console blocks share its working directory, so a
  ``--save`` or ``--json`` file written by one command is there for the next.
- Commands run as on a terminal of 100 columns, with one BLAS thread (``nnlab --threads 1``).
- In a sample output a line ``...`` (or ``[...]``) stands for any number of lines, and ``…`` for any text within
  one line (timings, machine-dependent numbers). Trailing spaces do not count.
- A block that cannot run as written carries ``<!-- not run: REASON -->`` on the line before its
  fence; the tests count these marks and keep them rare.

``python tests/doc_examples.py [--update] [PAGE ...]`` checks the pages from the shell; ``--update``
writes the actual outputs into the pages (keeping ``…`` where a line still matches, and the lines
around a ``...``), for a reviewed commit after an intended change of output.
"""

import contextlib
import difflib
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\S*)")


def pages():
    """README.md and every docs/*.md, as paths relative to the repository root."""
    return ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list
    not_run: str = None  # the reason, when marked

    @property
    def text(self):
        return "\n".join(self.lines) + "\n"

    @property
    def is_python(self):
        return self.lang == "python"

    @property
    def is_console(self):
        return bool(self.lines) and self.lines[0].startswith("$ ")


def blocks(page):
    """Every fenced block of ``page`` (relative to the repository root)."""
    src = (ROOT / page).read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(src):
        m = FENCE.match(src[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(src) and not src[j].startswith("```"):
            j += 1
        prev = next((src[k] for k in range(start - 1, -1, -1) if src[k].strip()), "")
        mark = NOT_RUN.search(prev)
        out.append(Block(page, start + 1, lang, src[start + 1:j], mark.group(1) if mark else None))
        i = j + 1
    return out


# ---------------------------------------------------------------- python blocks
@contextlib.contextmanager
def in_temp_dir():
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="nnlab-docs-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def run_python_blocks(page, standalone=False):
    """Run the page's python blocks in order, in one namespace (``standalone``: each block in a fresh
    one, as a reader who copies only that block); return how many ran. Activations a block registers
    are unregistered afterwards."""
    import nnlab as nl

    os.environ.setdefault("MPLBACKEND", "Agg")
    before = set(nl.activations.names())
    ns, n = {"__name__": "__docs__"}, 0
    try:
        for b in blocks(page):
            if b.is_python and not b.not_run:
                if standalone:
                    ns = {"__name__": "__docs__"}
                exec(compile(b.text, f"{page}:{b.line}", "exec"), ns)  # noqa: S102 - our own documentation
                n += 1
    finally:
        for name in set(nl.activations.names()) - before:
            nl.activations.unregister(name)
    return n


# ---------------------------------------------------------------- console blocks
@dataclass
class Step:
    command: str
    expected: list  # the sample output's lines
    line: int  # 1-based line of the `$` line in the page


def steps(block):
    out = []
    for k, text in enumerate(block.lines):
        if text.startswith("$ "):
            out.append(Step(text[2:].strip(), [], block.line + 1 + k))
        else:
            out[-1].expected.append(text)
    return out


@dataclass
class Shell:
    """Runs the commands the docs show, in-process, in one working directory."""

    status: int = 0
    outputs: dict = field(default_factory=dict)

    def run(self, command):
        """The text ``command`` prints (terminal view: stdout and stderr interleaved)."""
        words = shlex.split(command)
        if words == ["echo", "$?"]:
            return f"{self.status}\n"
        if words[0] in ("head", "cat"):
            n = int(words[1][1:]) if words[0] == "head" and words[1].startswith("-") else None
            text = Path(words[-1]).read_text(encoding="utf-8")
            return _head(text, n)
        if words[0] != "nnlab":
            raise ValueError(f"the docs test cannot run {command!r}: only nnlab, echo $?, head and cat")
        head = redirect = None
        if "|" in words:
            k = words.index("|")
            pipe, words = words[k + 1:], words[:k]
            if pipe[:1] != ["head"] or len(pipe) != 2:
                raise ValueError(f"the docs test only pipes into 'head -N': {command!r}")
            head = int(pipe[1][1:])
        if ">" in words:
            k = words.index(">")
            redirect, words = words[k + 1:], words[:k]
        from click.testing import CliRunner

        from nnlab_cli.main import cli

        res = CliRunner().invoke(cli, words[1:], prog_name="nnlab", env={"COLUMNS": "100", "LINES": "40", "NNLAB_QUIET": "1"})
        self.status = res.exit_code
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise RuntimeError(f"{command!r} raised {res.exception!r}") from res.exception
        if head is not None:  # a pipe takes stdout; stderr still reaches the terminal
            return _head(res.stdout, head) + res.stderr
        if redirect:
            if redirect != ["/dev/null"]:
                Path(redirect[0]).write_text(res.stdout, encoding="utf-8")
            return res.stderr
        return res.output


def _head(text, n):
    if n is None:
        return text
    return "".join(text.splitlines(keepends=True)[:n])


def _norm(text):
    return [line.rstrip() for line in text.rstrip("\n").split("\n")] if text.strip() else []


def pattern(expected):
    """A regex for the sample output ``expected`` (its lines): ``...`` lines and ``…`` are wildcards."""
    parts = []
    for line in expected:
        if _is_elision(line):
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*?".join(re.escape(p) for p in line.rstrip().split("…")) + r"\n")
    return re.compile("".join(parts))


def _is_elision(line):
    return line.strip() in ("...", "[...]")


def matches(expected, actual_text):
    actual = _norm(actual_text)
    return pattern([e for e in expected]).fullmatch("".join(a + "\n" for a in actual)) is not None


def check_console_blocks(page, update=False):
    """Run every console block of ``page``; return (commands run, [mismatch messages]).

    With ``update`` the page is rewritten with the actual outputs where they differ."""
    problems, n, edits = [], 0, {}
    with in_temp_dir(), _one_blas_thread():
        shell = Shell()
        for b in blocks(page):
            if not b.is_console or b.not_run:
                continue
            for st in steps(b):
                actual = shell.run(st.command)
                n += 1
                if matches(st.expected, actual):
                    continue
                diff = "\n".join(difflib.unified_diff(st.expected, _norm(actual), "docs", "actual", lineterm=""))
                problems.append(f"{page}:{st.line}: the output of `{st.command}` differs from the docs\n{diff}")
                edits[st.line] = (st.expected, _merge(st.expected, _norm(actual)))
    if update and edits:
        _apply(page, edits)
    return n, problems


@contextlib.contextmanager
def _one_blas_thread():
    """The samples are recorded as `nnlab --threads 1 ...` runs (same numbers, faster on a busy machine)."""
    from nnlab import backend

    old = backend.get_num_threads()
    if old is not None:
        backend.set_num_threads(1)
    try:
        yield
    finally:
        if old is not None:
            backend.set_num_threads(old)


def _merge(expected, actual):
    """The doc lines to write for ``actual``: placeholders kept where the doc's line still matches."""
    if not any(_is_elision(e) for e in expected):
        if len(expected) == len(actual):
            return [e if pattern([e]).fullmatch(a + "\n") else a for e, a in zip(expected, actual)]
        return list(actual)
    first = next(k for k, e in enumerate(expected) if _is_elision(e))
    last = max(k for k, e in enumerate(expected) if _is_elision(e))
    head = _merge(expected[:first], actual[:first])
    tail_n = len(expected) - last - 1
    tail = _merge(expected[last + 1:], actual[len(actual) - tail_n:]) if tail_n else []
    return head + expected[first:last + 1] + tail


def _apply(page, edits):
    path = ROOT / page
    src = path.read_text(encoding="utf-8").split("\n")
    for line in sorted(edits, reverse=True):  # bottom up, so earlier line numbers stay valid
        old, new = edits[line]
        src[line:line + len(old)] = new
    path.write_text("\n".join(src), encoding="utf-8")


def main(argv):
    update = "--update" in argv
    chosen = [a for a in argv if not a.startswith("--")] or pages()
    bad = 0
    for page in chosen:
        n, problems = check_console_blocks(page, update=update)
        for p in problems:
            print(p, end="\n\n")
        bad += len(problems)
        print(f"{page}: {n} command(s), {len(problems)} differ{' (updated)' if update and problems else ''}")
    return 1 if bad and not update else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
