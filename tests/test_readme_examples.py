"""The README's Python examples run as written (a user copies them first)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
