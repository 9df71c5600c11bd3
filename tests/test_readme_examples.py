"""The README's examples: its Python blocks run as written (a user copies them first), and its
train.py commands can be pasted in any order without one replacing another's model."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from snn.cli import train

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path):
    """Each block in a fresh process with an empty kernel cache, as a user pastes it into a new script
    (issue 15: a block passed in-process only because earlier tests had loaded the C library)."""
    code = python_blocks()[index]
    env = {**os.environ, "SNN_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"README.md python block {index} failed:\n{result.stderr[-4000:]}"


def test_readme_examples_can_be_pasted_in_any_order():
    """Every train.py example in the README either is the one default run, continues it, or
    writes its own --checkpoint; none of them can replace another's model."""
    readme = (REPO_ROOT / "README.md").read_text()
    commands = [line.split("#")[0].strip() for line in readme.splitlines() if "python train.py" in line]
    commands = [c[c.index("python train.py"):] for c in commands if c]
    assert commands, "the README has train.py examples"
    owners: dict[str, str] = {}
    for command in commands:
        words = shlex.split(command.rstrip("`"))
        args = train.parse_args(words[2:])
        assert not args.overwrite, f"a README example must not overwrite: {command}"
        if args.resume:
            continue
        other = owners.setdefault(args.checkpoint, command)
        assert other == command or other.split() == command.split(), (
            f"two README examples start new runs on {args.checkpoint}: {other!r} and {command!r}")

