"""The README's Python examples run as written (a user copies them first)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index):
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme_example"})
