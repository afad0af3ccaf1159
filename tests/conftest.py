from __future__ import annotations

from collections.abc import Iterator

import pytest

from ari_app.runtime import Runtime, RuntimeUnavailable, select_runtime
from tests.harness import Stack, make_stack


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    try:
        return select_runtime()
    except RuntimeUnavailable as exc:
        pytest.fail(f"no Asterisk runtime: {exc}")


@pytest.fixture(scope="session")
def stack(runtime: Runtime) -> Iterator[Stack]:
    """Asterisk + the Stasis app, shared by the call-flow tests."""
    stack = make_stack(runtime, "flow")
    stack.instance.start()
    stack.start_app()
    yield stack
    stack.stop_app()
    stack.instance.stop()
