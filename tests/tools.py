"""The programs `make setup` installs (devtools/prerequisites.py), as the tests ask for them."""

from __future__ import annotations

import pytest

from devtools import prerequisites


def require_tool(name: str) -> str:
    """Where the tool is; missing, the test fails (never skips) saying how to install it."""
    try:
        return prerequisites.TOOLS[name].require()
    except prerequisites.MissingTool as exc:
        pytest.fail(str(exc))
