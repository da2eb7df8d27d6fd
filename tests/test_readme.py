"""README promises that CI depends on: .ci/run runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    setup_and_run, tests = quick_start_commands()
    assert setup_and_run.endswith(".venv/bin/lotto-tui")  # the explorer is the main command
    assert "pytest" in tests
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in ci
    # both commands install the same way
    assert setup_and_run.split(" && ")[:2] == tests.split(" && ")[:2]
