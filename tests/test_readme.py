"""The README's commands and code: two set-up commands, CI runs the second, snippets run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_SCRIPT = REPO / ".ci" / "run"
EXAMPLE = REPO / "examples" / "train_digits.py"
PACKAGE_ROOT = Path(fastnn.__file__).resolve().parents[1]
SNIPPET_TIMEOUT_S = 300

MAIN_COMMAND = "pip install . && fastnn train --dataset digits"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(README.read_text()) if lang == language]


def _all_blocks() -> list[tuple[str, str]]:
    return _FENCE.findall(README.read_text())


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("FASTNN_BACKEND", None)
    return env


def test_readme_starts_with_exactly_two_setup_commands():
    text = README.read_text()
    first_heading = text.index("\n## ")
    top = [body.strip() for _, body in _FENCE.findall(text[:first_heading])]
    assert len(top) == 2, top
    assert top[0] == MAIN_COMMAND
    assert re.fullmatch(r'pip install "\.\[dev\]"( torch==[\d.]+)? && pytest', top[1]), top[1]
    assert "fastnn-dl" in text[:first_heading]


def test_ci_runs_the_readme_test_command_literally():
    test_command = _all_blocks()[1][1].strip()
    script = CI_SCRIPT.read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    assert test_command in script
    assert "python3 -m venv" in script and "ruff check" in script


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_snippet_runs(index):
    """Each python block runs as a script in a fresh interpreter, as a reader would run it."""
    code = _blocks("python")[index]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_python_env(), timeout=SNIPPET_TIMEOUT_S, check=False, cwd=REPO)
    assert done.returncode == 0, f"README python block {index} failed:\n{code}\n{done.stderr}"
    assert done.stdout.strip(), "every README snippet prints what it computed"
    if "gradcheck" in code:
        assert done.stdout.split()[0] == "True"
    if "history.history" in code:
        accuracy = float(re.search(r"test accuracy (\d\.\d+)", done.stdout).group(1))
        assert accuracy > 0.9


def test_example_script_trains_digits():
    done = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "3"], capture_output=True,
                          text=True, env=_python_env(), timeout=SNIPPET_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert re.search(r"test accuracy: 0\.\d{4}", done.stdout), done.stdout
