from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.devstack import DevStack, build_stack
from devtools.runtime import Runtime, RuntimeUnavailable, select_runtime
from devtools.stack import free_port
from tests.harness import until
from tests.webhook_receiver import Receiver

# how long Asterisk may take, after a call-flow test, to be rid of its channels and bridges
NOTHING_LEFT_TIMEOUT_SECONDS = 20


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
def asterisk(runtime: Runtime) -> Iterator[DevStack]:
    """A stack of its own with only Asterisk running: the test is the Stasis application."""
    root = runtime.scratch_root() / f"test-asterisk-{uuid.uuid4().hex[:8]}"
    stack = build_stack(runtime, root, free_ports=True)
    stack.instance.start()
    try:
        yield stack
    finally:
        stack.stop()  # with the SIPp parties the test left running
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free loopback port, not yet started (``await receiver.start()``)."""
    receiver = Receiver(free_port())
    yield receiver
    await receiver.stop()


@pytest.fixture
def checked_stack(stack: DevStack) -> DevStack:
    """The stack ``nothing_left_behind`` looks at; a module with a stack of its own
    overrides this fixture with it."""
    return stack


@pytest.fixture
async def nothing_left_behind(checked_stack: DevStack) -> AsyncIterator[None]:
    """After the test, Asterisk has no channel and no bridge left (a module asks for it with
    ``pytest.mark.usefixtures("nothing_left_behind")``)."""
    yield
    async with checked_stack.rest() as ari:

        async def empty() -> bool:
            return not await ari.channels() and not await ari.bridges()

        try:
            await until(empty, NOTHING_LEFT_TIMEOUT_SECONDS, "nothing left in Asterisk")
        except AssertionError as exc:
            left = [c.name for c in await ari.channels()] + [b.id for b in await ari.bridges()]
            raise AssertionError(f"{exc}: left {left}") from None
