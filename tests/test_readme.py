"""The README's front-door commands stay true: CI runs exactly the README's test command."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if marker in line:
            return next(l for l in lines[i + 1 :] if l.strip() and not l.startswith("```")).strip()
    raise AssertionError(f"README has no {marker!r} line")


def test_ci_runs_the_readme_test_command():
    command = readme_command("Run the tests")
    assert command.endswith("pytest")
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_main_job_command_is_the_quickstart():
    assert readme_command("Run the main job").endswith("infini-bench quickstart")
