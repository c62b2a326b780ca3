"""Report periods: calendar months written ``YYYY-MM``, read in the platform time zone.

This module is the only parser of periods. The API, the CLI and the message contracts all
call :func:`parse_period`, so they accept and reject exactly the same strings. A period is
a calendar month in the platform time zone (``settings.timezone``, Europe/Paris by
default), so 2025-01-31T23:30Z, which is 2025-02-01 00:30 in Paris, belongs to 2025-02.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

PERIOD_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

# The platform has no data from before this year, and Python's dates stop at year 1, so
# an earlier period can only be a typing error.
MIN_YEAR = 2000
EXPECTED_FORM = "YYYY-MM"


class InvalidPeriodError(ValueError):
    """A period string is malformed or names a month after the current one."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(self.message("en"))

    def message(self, locale: str = "fr") -> str:
        """Return the error for people, in French unless ``locale`` starts with "en"."""
        english = locale.lower().startswith("en")
        if self.reason == "too_old":
            if english:
                return f"period {self.value!r} is before {MIN_YEAR}; choose a month from {MIN_YEAR}-01 on."
            return f"la période {self.value!r} est antérieure à {MIN_YEAR} ; choisissez un mois à partir de {MIN_YEAR}-01."
        if self.reason == "future":
            if english:
                return f"period {self.value!r} is after the current month; choose this month or an earlier one."
            return f"la période {self.value!r} est postérieure au mois en cours ; choisissez ce mois-ci ou un mois passé."
        if english:
            return f"period {self.value!r} is invalid; expected the form {EXPECTED_FORM} with a month from 01 to 12, for example 2025-01."
        return f"la période {self.value!r} est invalide ; format attendu {EXPECTED_FORM} avec un mois de 01 à 12, par exemple 2025-01."


@dataclass(frozen=True, order=True)
class Period:
    """One calendar month."""

    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def previous(self) -> Period:
        if self.month == 1:
            return Period(self.year - 1, 12)
        return Period(self.year, self.month - 1)

    def next(self) -> Period:
        if self.month == 12:
            return Period(self.year + 1, 1)
        return Period(self.year, self.month + 1)

    def start(self, timezone: str) -> datetime:
        """Return midnight of the first day of the month in ``timezone``, as an aware datetime."""
        return datetime(self.year, self.month, 1, tzinfo=ZoneInfo(timezone))

    def end(self, timezone: str) -> datetime:
        """Return the exclusive end: midnight of the first day of the next month in ``timezone``."""
        return self.next().start(timezone)

    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def last_day(self) -> date:
        return self.next().first_day() - timedelta(days=1)

    @classmethod
    def containing(cls, moment: datetime, timezone: str) -> Period:
        """Return the period of an aware ``moment`` in ``timezone``."""
        if moment.tzinfo is None:
            raise ValueError(f"moment {moment.isoformat()} has no time zone; pass an aware datetime.")
        local = moment.astimezone(ZoneInfo(timezone))
        return cls(local.year, local.month)


@dataclass(frozen=True)
class ReportWindow:
    """The part of a period a report covers: the whole month, or the month to date."""

    period: Period
    timezone: str
    start: datetime
    end: datetime
    as_of: datetime
    """Exclusive end of what the report counts: ``end``, or the generation time while the month runs."""

    @property
    def month_to_date(self) -> bool:
        return self.as_of < self.end

    @property
    def previous_start(self) -> datetime:
        return self.period.previous().start(self.timezone)

    def stop_date(self) -> date:
        """Return the last local date the report covers (the day of ``as_of`` while the month runs)."""
        if not self.month_to_date:
            return self.period.last_day()
        return self.as_of.astimezone(ZoneInfo(self.timezone)).date()


def parse_period(value: object, *, now: datetime | None = None, timezone: str = "Europe/Paris") -> Period:
    """Parse a ``YYYY-MM`` string, raising InvalidPeriodError that names the value.

    Only the exact canonical form is accepted: no surrounding spaces, four-digit year from
    MIN_YEAR on, two-digit month from 01 to 12. When ``now`` is given, a month after the month of
    ``now`` in ``timezone`` is rejected too.
    """
    if not isinstance(value, str) or not PERIOD_PATTERN.fullmatch(value):
        raise InvalidPeriodError(value, "format")
    period = Period(int(value[:4]), int(value[5:7]))
    if period.year < MIN_YEAR:
        raise InvalidPeriodError(value, "too_old")
    if now is not None and period > Period.containing(now, timezone):
        raise InvalidPeriodError(value, "future")
    return period


def current_period(now: datetime, timezone: str) -> Period:
    return Period.containing(now, timezone)


def previous_period(now: datetime, timezone: str) -> Period:
    """Return the month before the month of ``now`` in ``timezone``: the default report period."""
    return Period.containing(now, timezone).previous()


def report_window(period: Period, now: datetime, timezone: str) -> ReportWindow:
    """Return the window a report generated at ``now`` covers.

    A finished month is covered whole. The running month is covered up to ``now``
    (month to date), and the report states the date it stops at.
    """
    start, end = period.start(timezone), period.end(timezone)
    as_of = min(end, max(start, now))
    return ReportWindow(period=period, timezone=timezone, start=start, end=end, as_of=as_of)


def periods_touched(start: datetime, end: datetime, timezone: str) -> list[Period]:
    """Return every period that overlaps the half-open interval [start, end), oldest first."""
    if end <= start:
        return []
    first = Period.containing(start, timezone)
    last = Period.containing(end - timedelta(microseconds=1), timezone)
    periods = [first]
    while periods[-1] < last:
        periods.append(periods[-1].next())
    return periods


def utc_now() -> datetime:
    return datetime.now(UTC)
