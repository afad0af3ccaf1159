"""Log fields of the call being handled: its interaction id and state, on every record.

Each call's events run in the call's own task (``ari_app/calls/dispatch.py``); the handler
binds the call to that task's context with :func:`bind_call`, and :class:`CallFields`, a
``logging.Filter`` installed on the log handler by the composition root, copies the call's
interaction id and current state onto every record emitted in that task, plus the node
name. The JSON log format shows them as fields; records outside a call carry the node only,
unless the line passes :func:`call_fields` as ``extra``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from enum import Enum
from typing import Protocol


class LoggedCall(Protocol):
    @property
    def interaction_id(self) -> str: ...

    @property
    def state(self) -> Enum: ...


_current_call: ContextVar[LoggedCall | None] = ContextVar("botbridge_call", default=None)


def call_fields(call: LoggedCall) -> dict[str, str]:
    """The fields as ``extra=`` for a line about a call written outside its task (the
    reader's first line about a new call, a shed call, the end of following one)."""
    return {"interaction_id": call.interaction_id, "call_state": call.state.value}


def bind_call(call: LoggedCall) -> None:
    """Mark the running task as handling ``call`` (task-local: other calls are unaffected)."""
    _current_call.set(call)


class CallFields(logging.Filter):
    """Adds ``interaction_id`` and ``call_state`` (inside a call) and ``node`` to records."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        call = _current_call.get()
        if call is not None:
            record.interaction_id = call.interaction_id
            record.call_state = call.state.value
        return True
