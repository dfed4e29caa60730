"""Checks shared by the CLI tests (importable by name: conftest.py puts tests/ on sys.path)."""


def one_line_error(result, code=2):
    """Assert a click result is exit ``code`` with exactly one non-blank output line starting with
    "Error:" and no traceback; return that line."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]
