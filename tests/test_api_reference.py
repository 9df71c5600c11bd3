"""The README's API reference is the docstrings' (snn/api_reference.py renders it)."""

from snn.api_reference import README, current_block, render


def test_readme_api_reference_is_rendered_from_the_docstrings():
    block = current_block(README.read_text())
    assert block is not None, "README.md lacks the API reference block"
    assert block == render(), "README's API reference is stale: run python -m snn.api_reference"
