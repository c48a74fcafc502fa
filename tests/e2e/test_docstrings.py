"""Every docstring example in the package runs as written (doctest), so none can go stale."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import twinnet


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(twinnet.__path__, "twinnet."):
        spec = importlib.util.find_spec(info.name)
        source = spec.loader.get_source(info.name) if spec and spec.loader else None  # type: ignore[union-attr]
        if source and ">>>" in source:
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_examples_are_found():
    # The losses and the model document themselves with runnable examples; if this finds none,
    # the collection below is silently testing nothing.
    assert "twinnet.model" in MODULES
    assert sum(name.startswith("twinnet.losses.") for name in MODULES) >= 5


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
