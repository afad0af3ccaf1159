from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.stack import free_port
from tests.webhook_receiver import Receiver


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    try:
        return select_runtime()
    except RuntimeUnavailable as exc:
        pytest.fail(f"no Asterisk runtime: {exc}")


@pytest.fixture(scope="session")
def stack(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Asterisk + the Stasis app on free loopback ports, shared by the call-flow tests."""
    root = runtime.scratch_root() / f"test-{tmp_path_factory.getbasetemp().name}"
    stack = build_stack(
        runtime, root, free_ports=True, extra_env={"BOTBRIDGE_BOT_ANSWER_TIMEOUT": "4"}
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free loopback port, not yet started (``await receiver.start()``)."""
    receiver = Receiver(free_port())
    yield receiver
    await receiver.stop()
