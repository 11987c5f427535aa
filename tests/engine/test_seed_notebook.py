"""The seed notebook's cells on the engine print exactly what they printed on PyTorch."""

from __future__ import annotations

from types import ModuleType

import crossgrad.engine as cg
import pytest

from tests.notebook import CELLS, NON_LEAF_WARNING, run_notebook


@pytest.mark.parametrize("index", range(len(CELLS)))
def test_cell_prints_what_the_notebook_printed(index: int) -> None:
    expected, printed, _ = run_notebook(cg)[index]
    assert printed == expected


def test_non_leaf_grad_warns_like_pytorch() -> None:
    cell = next(i for i, (code, _) in enumerate(CELLS) if code == "y2.grad")
    _, _, caught = run_notebook(cg)[cell]
    assert len(caught) == 1 and caught[0].startswith(NON_LEAF_WARNING)


@pytest.mark.torch
def test_the_notebook_prints_the_same_on_pytorch(require_torch: ModuleType) -> None:
    # Guards the golden strings themselves: PyTorch 2.13 prints them too.
    for expected, printed, _ in run_notebook(require_torch):
        assert printed == expected
