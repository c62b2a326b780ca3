from datetime import UTC, date, datetime

import pytest

from dashboard_jobs.domain.periods import (
    InvalidPeriodError,
    Period,
    parse_period,
    periods_touched,
    previous_period,
    report_window,
)
from tests.report_data import INVALID_PERIODS

PARIS = "Europe/Paris"


@pytest.mark.parametrize("value", ["2025-01", "2025-12", "2000-01"])
def test_parse_accepts_canonical_form(value):
    assert str(parse_period(value)) == value


@pytest.mark.parametrize("value", INVALID_PERIODS)
def test_parse_rejects_malformed(value):
    with pytest.raises(InvalidPeriodError) as caught:
        parse_period(value)
    assert repr(value) in caught.value.message("fr")
    assert "YYYY-MM" in caught.value.message("fr")
    assert repr(value) in caught.value.message("en")
    assert "YYYY-MM" in str(caught.value)


@pytest.mark.parametrize("value", ["0000-01", "0001-01", "1000-01", "1999-12"])
def test_parse_rejects_years_before_2000(value):
    with pytest.raises(InvalidPeriodError) as caught:
        parse_period(value)
    assert caught.value.reason == "too_old"
    assert repr(value) in caught.value.message("fr")
    assert "2000-01" in caught.value.message("en")


def test_parse_rejects_non_string():
    with pytest.raises(InvalidPeriodError):
        parse_period(202501)


def test_parse_rejects_month_after_current():
    now = datetime(2025, 3, 17, 12, 0, tzinfo=UTC)
    assert parse_period("2025-03", now=now) == Period(2025, 3)
    with pytest.raises(InvalidPeriodError) as caught:
        parse_period("2025-04", now=now)
    assert caught.value.reason == "future"
    assert "'2025-04'" in caught.value.message("fr")
    assert "mois en cours" in caught.value.message("fr")


def test_current_month_follows_paris_clock():
    # 23:30 UTC on 31 March is already 1 April in Paris (UTC+2).
    now = datetime(2025, 3, 31, 23, 30, tzinfo=UTC)
    assert parse_period("2025-04", now=now) == Period(2025, 4)


def test_period_bounds_in_paris():
    period = Period(2025, 1)
    assert period.start(PARIS) == datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    assert period.end(PARIS) == datetime(2025, 1, 31, 23, 0, tzinfo=UTC)
    assert Period(2025, 7).start(PARIS) == datetime(2025, 6, 30, 22, 0, tzinfo=UTC)


def test_evaluation_late_january_31_belongs_to_february():
    moment = datetime(2025, 1, 31, 23, 30, tzinfo=UTC)
    assert Period.containing(moment, PARIS) == Period(2025, 2)
    assert Period.containing(moment, "UTC") == Period(2025, 1)


def test_previous_period_wraps_year():
    assert Period(2025, 1).previous() == Period(2024, 12)
    assert previous_period(datetime(2025, 1, 10, tzinfo=UTC), PARIS) == Period(2024, 12)


def test_window_of_finished_month_is_whole():
    window = report_window(Period(2025, 1), datetime(2025, 3, 1, tzinfo=UTC), PARIS)
    assert not window.month_to_date
    assert window.as_of == window.end
    assert window.stop_date() == date(2025, 1, 31)


def test_window_of_running_month_stops_now():
    now = datetime(2025, 3, 17, 12, 0, tzinfo=UTC)
    window = report_window(Period(2025, 3), now, PARIS)
    assert window.month_to_date
    assert window.as_of == now
    assert window.stop_date() == date(2025, 3, 17)


def test_periods_touched_by_week_across_months():
    start = datetime(2025, 2, 24, 5, 0, tzinfo=UTC)
    end = datetime(2025, 3, 3, 5, 0, tzinfo=UTC)
    assert periods_touched(start, end, PARIS) == [Period(2025, 2), Period(2025, 3)]
    assert periods_touched(datetime(2025, 3, 3, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC), PARIS) == [
        Period(2025, 3)
    ]
