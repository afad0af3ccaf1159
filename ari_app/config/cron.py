"""Five-field cron expressions for report schedules, evaluated by ``cronsim``.

``minute hour day-of-month month day-of-week``, with the syntax of Debian's cron: ``*``,
numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n``, lists, three-letter month and
weekday names; weekday 0 and 7 are both Sunday; when both the day of month and the day of
week are restricted, a day matching either one fires. ``@hourly``, ``@daily``
(``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``) are shorthands.

Daylight-saving changes follow cron's rules (cronsim implements them): a time skipped by a
spring-forward jump fires right after the jump (``30 2 * * *`` in Europe/Berlin fires at
03:00 on the last Sunday of March instead of being skipped), a repeated time fires once.
docs/decisions.md says why this is a library and not our own parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_COUNT = 5
# a probe start for checking that an expression ever fires (cronsim raises for impossible
# dates such as 30 February while iterating)
_PROBE = datetime(2000, 1, 1)


class CronError(ValueError):
    """The expression is not valid; the message says which part."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    fields: str  # the five fields cronsim reads (a shorthand expanded)

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = _SHORTHANDS.get(expression.strip().lower(), expression)
        found = len(fields.split())
        if found != _FIELD_COUNT:
            raise CronError(
                f"{expression!r} must have 5 fields (minute hour day-of-month month "
                f"day-of-week), found {found}"
            )
        schedule = cls(expression=expression, fields=" ".join(fields.split()))
        schedule._simulate(_PROBE)  # cronsim validates every field here
        return schedule

    def explain(self) -> str:
        """The expression in English words, e.g. "At 07:00 on Monday"."""
        return str(self._simulate(_PROBE).explain())

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after ``moment`` (an aware datetime keeps its tzinfo)."""
        try:
            upcoming: datetime = next(self._simulate(moment))
        except (CronSimError, StopIteration) as exc:
            raise CronError(f"{self.expression!r} never fires (no matching date)") from exc
        return upcoming

    def matches(self, moment: datetime) -> bool:
        """Whether the expression fires in the minute of ``moment``.

        Decided by cronsim's next firing after the end of the previous minute, compared as
        instants: the daylight-saving rules of the module docstring hold minute by minute.
        """
        minute = moment.replace(second=0, microsecond=0)
        if minute.tzinfo is None:
            return self.next_after(minute - timedelta(seconds=1)) == minute
        just_before = (minute.astimezone(UTC) - timedelta(seconds=1)).astimezone(minute.tzinfo)
        return self.next_after(just_before).astimezone(UTC) == minute.astimezone(UTC)

    def _simulate(self, start: datetime) -> CronSim:
        try:
            return CronSim(self.fields, start)
        except CronSimError as exc:
            raise CronError(f"{self.expression!r}: {exc}") from exc
