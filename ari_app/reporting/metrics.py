"""Prometheus metrics of the bridge (served at ``/metrics``; names in docs/reports.md).

One ``Metrics`` per app, with its own registry: the call sessions report outcomes and
transfer handling times to it (it is their ``observer``), and the active-call gauge and the
ARI reconnect counter are read from the app when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ari_app.outcomes import OUTCOMES

PREFIX = "botbridge"
# transfer handling: a handful of ARI round trips on loopback, normally tens of milliseconds
TRANSFER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


# the record writer's health (RecordWriter.health(); docs/records.md): name -> (kind, help)
RECORD_WRITER_FIGURES = {
    "oldest_unwritten_seconds": (
        GaugeMetricFamily,
        "Age of the oldest record change not yet in the database (0 when none waits)",
    ),
    "failures": (CounterMetricFamily, "Record writer batches the database could not take"),
    "journal_bytes": (
        GaugeMetricFamily,
        "Size of the record journal (changes kept on local disk while the database fails)",
    ),
    "journal_refused": (
        CounterMetricFamily,
        "Appends the record journal refused (full or failing): those changes stayed in memory",
    ),
    "set_aside": (
        CounterMetricFamily,
        "Record changes the database refused for their data, set aside in the dead-letter file",
    ),
}


def _record_writer_families(
    figures: Mapping[str, float],
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    for name, (kind, text) in RECORD_WRITER_FIGURES.items():
        if name in figures:
            yield kind(f"{PREFIX}_record_writer_{name}", text, value=figures[name])


class _AppCollector(Collector):
    """Figures read from the running app at scrape time."""

    def __init__(self) -> None:
        self.active_calls: Callable[[], int] = lambda: 0
        self.reconnects: Callable[[], int] = lambda: 0
        self.connected: Callable[[], bool] = lambda: False
        self.ari_requests: Callable[[], int] = lambda: 0
        self.ari_events: Callable[[], int] = lambda: 0
        self.pending_events: Callable[[], int] = lambda: 0
        self.record_backlog: Callable[[], int] = lambda: 0
        self.record_writer: Callable[[], Mapping[str, float]] = dict
        self.shed: Callable[[], Mapping[str, int]] = dict
        self.bot_active: Callable[[], Mapping[str, int]] = dict
        self.bot_reachable: Callable[[], Mapping[str, bool]] = dict
        self.webhooks: Callable[[], Mapping[str, int]] = dict
        self.bye_copies: Callable[[], Mapping[str, int]] = dict
        self.bye_copies_held: Callable[[], int] = lambda: 0
        self.bye_dialogs: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_active_calls",
            "Calls the app is following now (caller in the app, not yet in a queue or gone)",
            value=self.active_calls(),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_ari_reconnects",
            "Times the ARI event WebSocket was re-established after the first connection",
            value=self.reconnects(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_ari_connected",
            "1 while the ARI event WebSocket is connected",
            value=1 if self.connected() else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_ari_requests",
            "ARI REST requests sent (divide by calls for round trips per call)",
            value=self.ari_requests(),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_ari_events",
            "ARI events received on the event WebSocket",
            value=self.ari_events(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_pending_events",
            "ARI events received and not yet handled, over all calls",
            value=self.pending_events(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_record_backlog",
            "Interaction records with changes not yet committed by the record writer",
            value=self.record_backlog(),
        )
        yield from _record_writer_families(self.record_writer())
        shed = CounterMetricFamily(
            f"{PREFIX}_calls_shed",
            "New calls shed by admission control, by the limit that was reached",
            labels=["reason"],
        )
        for reason, count in sorted(self.shed().items()):
            shed.add_metric([reason], count)
        yield shed
        active = GaugeMetricFamily(
            f"{PREFIX}_bot_active_calls",
            "Calls dialling or talking to each bot URI (what max_concurrent_calls limits)",
            labels=["bot"],
        )
        for bot, count in sorted(self.bot_active().items()):
            active.add_metric([bot], count)
        yield active
        reachable = GaugeMetricFamily(
            f"{PREFIX}_bot_reachable",
            "1 while a bot URI counts as reachable (its last SIP OPTIONS probe answered, or "
            "it is not probed), 0 while it is skipped as unreachable",
            labels=["bot"],
        )
        for bot, up in sorted(self.bot_reachable().items()):
            reachable.add_metric([bot], 1 if up else 0)
        yield reachable
        webhooks = CounterMetricFamily(
            f"{PREFIX}_webhook_attempts",
            "Webhook delivery attempts by result (delivered, failed, given_up)",
            labels=["result"],
        )
        for result, count in sorted(self.webhooks().items()):
            webhooks.add_metric([result], count)
        yield webhooks
        bye = CounterMetricFamily(
            f"{PREFIX}_bye_context_copies",
            "HEP copies received by the [bye_context] receiver, by result (kept, rejected, "
            "sent, oversize, other_dialog, not_bye)",
            labels=["result"],
        )
        for result, count in sorted(self.bye_copies().items()):
            bye.add_metric([result], count)
        yield bye
        yield GaugeMetricFamily(
            f"{PREFIX}_bye_context_held",
            "BYE copies the [bye_context] receiver holds now (at most one per live bot dialog)",
            value=self.bye_copies_held(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_bye_context_dialogs",
            "Live bot dialogs the [bye_context] receiver follows now (their BYE copies kept)",
            value=self.bye_dialogs(),
        )

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return self.collect()


class Metrics:
    """The app's metrics and the ``SessionObserver`` the call sessions report to."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._app = _AppCollector()
        self.registry.register(self._app)
        self.outcomes = Counter(
            f"{PREFIX}_call_outcomes",
            "Interactions by outcome, counted when the outcome is decided",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)  # every outcome is exported from the start, at 0
        self.transfer_seconds = Histogram(
            f"{PREFIX}_transfer_handling_seconds",
            "From the bot REFER's Local channel entering the app to the caller continuing "
            "into the queue",
            buckets=TRANSFER_BUCKETS,
            registry=self.registry,
        )
        self.agent_answers = Counter(
            f"{PREFIX}_agent_answers",
            "Escalated callers answered, by queue or external target and by the agent (or "
            "target) who answered",
            ["queue", "agent"],
            registry=self.registry,
        )
        self.report_emails = Counter(
            f"{PREFIX}_report_emails",
            "Scheduled report emails by result (sent, failed)",
            ["result"],
            registry=self.registry,
        )
        for result in ("sent", "failed"):
            self.report_emails.labels(result)
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "Requests to the app's HTTP server by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        if process:
            ProcessCollector(registry=self.registry)

    # -- SessionObserver -----------------------------------------------------------------

    def outcome(self, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()

    def transfer_handled(self, seconds: float) -> None:
        self.transfer_seconds.observe(max(0.0, seconds))

    def agent_answered(self, queue: str, agent: str) -> None:
        self.agent_answers.labels(queue, agent).inc()

    # -- the app ---------------------------------------------------------------------------

    def bind(
        self,
        *,
        active_calls: Callable[[], int],
        reconnects: Callable[[], int],
        connected: Callable[[], bool],
        ari_requests: Callable[[], int] = lambda: 0,
        ari_events: Callable[[], int] = lambda: 0,
        pending_events: Callable[[], int] = lambda: 0,
        record_backlog: Callable[[], int] = lambda: 0,
        record_writer: Callable[[], Mapping[str, float]] = dict,
        shed: Callable[[], Mapping[str, int]] = dict,
        bot_active: Callable[[], Mapping[str, int]] = dict,
        bot_reachable: Callable[[], Mapping[str, bool]] = dict,
        webhooks: Callable[[], Mapping[str, int]] = dict,
        bye_copies: Callable[[], Mapping[str, int]] = dict,
        bye_copies_held: Callable[[], int] = lambda: 0,
        bye_dialogs: Callable[[], int] = lambda: 0,
    ) -> None:
        self._app.active_calls = active_calls
        self._app.reconnects = reconnects
        self._app.connected = connected
        self._app.ari_requests = ari_requests
        self._app.ari_events = ari_events
        self._app.pending_events = pending_events
        self._app.record_backlog = record_backlog
        self._app.record_writer = record_writer
        self._app.shed = shed
        self._app.bot_active = bot_active
        self._app.bot_reachable = bot_reachable
        self._app.webhooks = webhooks
        self._app.bye_copies = bye_copies
        self._app.bye_copies_held = bye_copies_held
        self._app.bye_dialogs = bye_dialogs

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
