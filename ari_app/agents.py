"""Agents at run time: log in, log out, pause and unpause, and their state, through ARI.

Membership is app_queue's own: a login is ``AddQueueMember`` (a dynamic member, kept by
Asterisk while the app restarts and, with ``persistentmembers``, in AstDB across Asterisk
restarts), a logout ``RemoveQueueMember``. ARI has no request for either, so each runs in the
dialplan: a Local channel is originated into ``[botbridge-agent-control]`` (its ``;2`` half
runs the one application and hangs up; nothing is called). Pausing writes app_queue's
``QUEUE_MEMBER(queue,paused,interface)`` as an ARI global variable, which needs no channel.
State is read with ``QUEUE_MEMBER_LIST`` and ``QUEUE_MEMBER(...,paused,...)`` on a probe
channel (dialplan functions are read on a channel). Every queue, interface and penalty
comes from ``[agents]``; nothing from the request but the agent's name and the action.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

from ari_app.ari import AriRest
from ari_app.config import Config

__all__ = ["ACTIONS", "AgentControl", "AgentError", "AgentState"]

ACTIONS = ("login", "logout", "pause", "unpause")
# how long a login or logout may take to show in app_queue's members before it is reported
# as failed (the originated Local channel runs one dialplan application)
CHANGE_TIMEOUT_SECONDS = 5.0
CHANGE_POLL_SECONDS = 0.1
# the probe channel's ;2 half waits this long unanswered; the probe is hung up after its read
PROBE_SECONDS = 10
CONTROL_CONTEXT = "botbridge-agent-control"
PROBE_EXTENSION = "probe"
_SEP = "\x1e"

# an agent's state in one queue
LOGGED_OUT, AVAILABLE, PAUSED = "logged_out", "available", "paused"
AgentState = dict[str, str]  # queue -> state


class AgentError(ValueError):
    """The request names no configured agent, or an action it cannot take; the message says
    why."""


class AgentControl:
    def __init__(self, ari: AriRest, config: Config) -> None:
        self._ari = ari
        self._config = config

    def _agent(self, name: str, action: str) -> Mapping[str, int]:
        if action not in ACTIONS:
            raise AgentError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        agent = self._config.agents.get(name)
        if agent is None:
            raise AgentError(f"no agent {name!r} in [agents]")
        if action in ("login", "logout") and agent.membership == "static":
            raise AgentError(
                f"agent {name!r} has membership 'static': always a member (pause it instead)"
            )
        if not agent.queues:
            raise AgentError(f"agent {name!r} is in no queue")
        return agent.queues

    async def act(self, name: str, action: str) -> AgentState:
        """Do ``action`` for agent ``name`` in every queue of it; its state after it."""
        queues = self._agent(name, action)
        interface = f"PJSIP/{name}"
        if action in ("pause", "unpause"):
            value = "1" if action == "pause" else "0"
            members = (await self.state(name)).items()
            for queue, _ in (m for m in members if m[1] != LOGGED_OUT):
                await self._ari.post(
                    "/asterisk/variable",
                    params={
                        "variable": f"QUEUE_MEMBER({queue},paused,{interface})",
                        "value": value,
                    },
                )
            return await self.state(name)
        for queue, penalty in queues.items():
            variables = {
                "BOTBRIDGE_MEMBER_QUEUE": queue,
                "BOTBRIDGE_MEMBER_INTERFACE": interface,
                "BOTBRIDGE_MEMBER_PENALTY": str(penalty),
                "BOTBRIDGE_MEMBER_NAME": name,
            }
            await self._originate(action, {}, variables)
        deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
        while True:
            state = await self.state(name)
            done = all((s == LOGGED_OUT) == (action == "logout") for s in state.values())
            if done:
                return state
            if time.monotonic() > deadline:
                raise AgentError(f"{action} of {name!r} not done in {CHANGE_TIMEOUT_SECONDS}s")
            await asyncio.sleep(CHANGE_POLL_SECONDS)

    async def state(self, name: str) -> AgentState:
        """Agent ``name``'s state in each of its queues."""
        return (await self.states([name]))[name]

    async def states(self, names: list[str] | None = None) -> dict[str, AgentState]:
        """Each agent's state in each of its queues, read from app_queue in one request."""
        unknown = sorted(set(names or ()) - set(self._config.agents))
        if unknown:
            raise AgentError(f"no agent {unknown[0]!r} in [agents]")
        agents = {n: self._config.agents[n] for n in names or self._config.agents}
        pairs = [(name, queue) for name, agent in agents.items() for queue in agent.queues]
        if not pairs:
            return {name: {} for name in agents}
        expression = _SEP.join(
            f"${{QUEUE_MEMBER_LIST({q})}}{_SEP}${{QUEUE_MEMBER({q},paused,PJSIP/{n})}}"
            for n, q in pairs
        )
        values = (await self._probe_read(f"EVAL({expression})")).split(_SEP)
        result: dict[str, AgentState] = {name: {} for name in agents}
        for i, (name, queue) in enumerate(pairs):
            members, paused = values[2 * i : 2 * i + 2] if len(values) > 2 * i + 1 else ("", "")
            if f"PJSIP/{name}" not in members.split(","):
                result[name][queue] = LOGGED_OUT
            else:
                result[name][queue] = PAUSED if paused == "1" else AVAILABLE
        return result

    async def _probe_read(self, variable: str) -> str:
        """Read a dialplan expression on a probe channel made for it (then hung up)."""
        probe = f"botbridge-agents-{uuid.uuid4().hex}"
        await self._originate(PROBE_EXTENSION, {"timeout": PROBE_SECONDS, "channelId": probe})
        try:
            return await self._ari.get_var(probe, variable) or ""
        finally:
            await self._ari.hangup(probe)

    async def _originate(
        self,
        extension: str,
        params: Mapping[str, str | int],
        variables: Mapping[str, str] | None = None,
    ) -> None:
        """A Local channel whose ;2 half runs ``extension`` of the control context; the ;1
        half would go to ``[botbridge-probe]`` (it hangs up) if it were ever answered."""
        await self._ari.post(
            "/channels",
            params={
                "endpoint": f"Local/{extension}@{CONTROL_CONTEXT}/n",
                "context": "botbridge-probe",
                "extension": "s",
                "priority": 1,
                **params,
            },
            json={"variables": dict(variables)} if variables else None,
        )
