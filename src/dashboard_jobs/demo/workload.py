"""Open-loop load generator: coaches writing tasks, evaluations and sessions through the API.

Writes leave on a fixed timetable, ``rate`` per second for ``duration`` seconds, whether or
not earlier ones got a response. A slow API therefore shows up as latency and as writes
that could not leave on time, instead of silently lowering the offered load. Each write comes from a
random coach, on one of that coach's own students, with that coach's bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from dashboard_jobs.demo.school import PARIS, SESSION_DURATIONS, local_time, task_title
from dashboard_jobs.domain.subjects import SUBJECTS

log = logging.getLogger(__name__)

CREATE_TASK = "create_task"
COMPLETE_TASK = "complete_task"
UPDATE_TASK = "update_task"
RECORD_EVALUATION = "record_evaluation"
LOG_SESSION = "log_session"
UPDATE_SESSION = "update_session"

# Share of each kind of write, in percent.
WRITE_MIX: dict[str, int] = {
    CREATE_TASK: 35,
    COMPLETE_TASK: 15,
    UPDATE_TASK: 10,
    RECORD_EVALUATION: 25,
    LOG_SESSION: 10,
    UPDATE_SESSION: 5,
}
DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
# A write that leaves more than this after its slot in the timetable counts as late.
LATE_AFTER_SECONDS = 0.1

CoachRoster = Sequence[tuple[uuid.UUID, Sequence[uuid.UUID]]]


@dataclass(frozen=True)
class WriteRecord:
    """One write sent to the API and its outcome.

    ``status_code`` is None when no response arrived (timeout or connection error), and
    ``error`` then names the httpx exception. ``scheduled_offset`` is the write's slot in the
    timetable, in seconds from the start of the run.
    """

    kind: str
    student_id: uuid.UUID
    status_code: int | None
    error: str | None
    scheduled_offset: float
    sent_at: datetime
    responded_at: datetime
    latency_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class WorkloadResult:
    """The writes of one run and the API's responses.

    ``scheduled`` counts the slots of the timetable. ``not_sent`` counts the slots skipped
    because ``max_in_flight`` writes were still waiting for a response, and ``sent_late``
    the writes that left more than LATE_AFTER_SECONDS after their slot. ``elapsed`` is
    the time in seconds from the first slot to the last response.
    """

    records: list[WriteRecord]
    scheduled: int
    not_sent: int
    sent_late: int
    started_at: datetime
    elapsed: float

    @property
    def late(self) -> int:
        """Return the writes that could not leave on time: skipped or sent late."""
        return self.not_sent + self.sent_late

    @property
    def attempted(self) -> int:
        return len(self.records)

    @property
    def succeeded(self) -> int:
        return sum(1 for record in self.records if record.succeeded)

    @property
    def failed(self) -> int:
        return self.attempted - self.succeeded

    @property
    def failed_by_status(self) -> dict[str, int]:
        """Return failed writes per HTTP status code, or per exception name when no response arrived."""
        return dict(
            Counter(str(record.status_code or record.error) for record in self.records if not record.succeeded)
        )

    @property
    def by_kind(self) -> dict[str, int]:
        return dict(Counter(record.kind for record in self.records))

    @property
    def touched_student_ids(self) -> list[uuid.UUID]:
        """Return the students with at least one successful write, whose summaries must change."""
        return sorted({record.student_id for record in self.records if record.succeeded})


@dataclass(frozen=True)
class _Write:
    kind: str
    coach_id: uuid.UUID
    student_id: uuid.UUID
    method: str
    path: str
    body: dict[str, Any] | None
    subject: str | None = None


@dataclass
class _Created:
    """Rows this run created per coach, the only rows it changes afterwards."""

    open_tasks: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)
    tasks: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)
    sessions: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


def _school_day_at(day: date, minute_of_day: int) -> str:
    if day.weekday() >= 5:
        day += timedelta(days=7 - day.weekday())
    return local_time(day, minute_of_day).isoformat()


class _WritePlanner:
    """Draws the next write from the mix, using rows created earlier in the run when it can."""

    def __init__(self, rng: random.Random, coaches: CoachRoster, subjects: Sequence[str]) -> None:
        self._rng = rng
        self._coaches = [(coach_id, list(students)) for coach_id, students in coaches if students]
        self._subjects = list(subjects)
        self._kinds = list(WRITE_MIX)
        self._weights = list(WRITE_MIX.values())
        self.created: dict[uuid.UUID, _Created] = {coach_id: _Created() for coach_id, _ in self._coaches}

    def next_write(self) -> _Write:
        coach_id, students = self._rng.choice(self._coaches)
        kind = self._rng.choices(self._kinds, self._weights)[0]
        created = self.created[coach_id]
        today = datetime.now(PARIS).date()

        if kind == COMPLETE_TASK and created.open_tasks:
            # Popping the task now, not on the response, keeps a second completion of the
            # same task out of the run.
            task_id, student_id, _ = created.open_tasks.pop(self._rng.randrange(len(created.open_tasks)))
            return _Write(kind, coach_id, student_id, "POST", f"/tasks/{task_id}/complete", None)
        if kind == UPDATE_TASK and created.tasks:
            task_id, student_id, subject = self._rng.choice(created.tasks)
            change = self._task_change(subject, today)
            return _Write(kind, coach_id, student_id, "PATCH", f"/tasks/{task_id}", change)
        if kind == UPDATE_SESSION and created.sessions:
            session_id, student_id = self._rng.choice(created.sessions)
            change = self._session_change(today)
            return _Write(kind, coach_id, student_id, "PATCH", f"/sessions/{session_id}", change)

        # The remaining kinds, and the changes with nothing to change yet, create a row.
        student_id = self._rng.choice(students)
        student_path = f"/students/{student_id}"
        if kind in (LOG_SESSION, UPDATE_SESSION):
            session_body = self._new_session(today)
            return _Write(LOG_SESSION, coach_id, student_id, "POST", f"{student_path}/sessions", session_body)
        if kind == RECORD_EVALUATION:
            evaluation_body = self._new_evaluation()
            return _Write(kind, coach_id, student_id, "POST", f"{student_path}/evaluations", evaluation_body)
        subject = self._rng.choice(self._subjects)
        body = {
            "title": task_title(self._rng, subject),
            "subject": subject,
            "due_at": self._due_at(today),
        }
        return _Write(CREATE_TASK, coach_id, student_id, "POST", f"{student_path}/tasks", body, subject)

    def remember(self, write: _Write, response: httpx.Response) -> None:
        """Keep the id of a task or session the API created, so later writes can change it."""
        if write.kind not in (CREATE_TASK, LOG_SESSION):
            return
        try:
            row_id = uuid.UUID(str(response.json()["id"]))
        except (ValueError, KeyError, TypeError):
            log.warning(
                "created row has no id in the response body", extra={"kind": write.kind, "path": write.path}
            )
            return
        created = self.created[write.coach_id]
        if write.kind == CREATE_TASK and write.subject is not None:
            created.open_tasks.append((row_id, write.student_id, write.subject))
            created.tasks.append((row_id, write.student_id, write.subject))
        elif write.kind == LOG_SESSION:
            created.sessions.append((row_id, write.student_id))

    def _due_at(self, today: date) -> str:
        return _school_day_at(today + timedelta(days=self._rng.randint(1, 10)), 8 * 60)

    def _task_change(self, subject: str, today: date) -> dict[str, Any]:
        draw = self._rng.random()
        if draw < 0.4:
            return {"due_at": self._due_at(today)}
        if draw < 0.7:
            return {"title": task_title(self._rng, subject)}
        return {"status": "in_progress"}

    def _new_evaluation(self) -> dict[str, Any]:
        score = round(min(20.0, max(0.0, self._rng.gauss(12.5, 3.5))) * 2) / 2
        evaluated_at = datetime.now(UTC) - timedelta(minutes=self._rng.randint(0, 48 * 60))
        return {
            "subject": self._rng.choice(self._subjects),
            "score": score,
            "max_score": 20,
            "evaluated_at": evaluated_at.isoformat(),
        }

    def _session_start(self, today: date) -> str:
        minute = self._rng.choice((17 * 60, 17 * 60 + 30, 18 * 60, 18 * 60 + 30))
        return _school_day_at(today + timedelta(days=self._rng.randint(1, 14)), minute)

    def _new_session(self, today: date) -> dict[str, Any]:
        return {
            "starts_at": self._session_start(today),
            "duration_minutes": self._rng.choice(SESSION_DURATIONS),
            "status": "planned",
        }

    def _session_change(self, today: date) -> dict[str, Any]:
        draw = self._rng.random()
        if draw < 0.5:
            return {"starts_at": self._session_start(today)}
        if draw < 0.7:
            return {"duration_minutes": self._rng.choice(SESSION_DURATIONS)}
        return {"status": "cancelled"}


class _Sender:
    """Sends writes and records their outcome, logging the first failure of each status or error."""

    def __init__(self, client: httpx.AsyncClient, tokens: Mapping[uuid.UUID, str], planner: _WritePlanner) -> None:
        self._client = client
        self._tokens = tokens
        self._planner = planner
        self._failures_logged: set[str] = set()
        self.in_flight = 0
        self.records: list[WriteRecord] = []

    def start(self, write: _Write, scheduled_offset: float) -> asyncio.Task[None]:
        # Counted here rather than in the task, which only starts at the next await, so the
        # timetable reads the right count even when it sends a backlog without yielding.
        self.in_flight += 1
        return asyncio.create_task(self._send(write, scheduled_offset))

    async def _send(self, write: _Write, scheduled_offset: float) -> None:
        sent_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.request(
                write.method,
                write.path,
                json=write.body,
                headers={"Authorization": f"Bearer {self._tokens[write.coach_id]}"},
            )
            status_code = response.status_code
            if response.is_success:
                self._planner.remember(write, response)
        except httpx.HTTPError as exception:
            error = type(exception).__name__
        finally:
            self.in_flight -= 1

        latency_ms = (time.perf_counter() - started) * 1000
        record = WriteRecord(
            kind=write.kind,
            student_id=write.student_id,
            status_code=status_code,
            error=error,
            scheduled_offset=scheduled_offset,
            sent_at=sent_at,
            responded_at=datetime.now(UTC),
            latency_ms=latency_ms,
        )
        self.records.append(record)
        if not record.succeeded:
            self._log_first_failure(write, record)

    def _log_first_failure(self, write: _Write, record: WriteRecord) -> None:
        outcome = str(record.status_code or record.error)
        if outcome in self._failures_logged:
            return
        self._failures_logged.add(outcome)
        log.warning(
            "workload write failed; later failures with this outcome are only counted",
            extra={
                "outcome": outcome,
                "kind": write.kind,
                "path": write.path,
                "student_id": str(write.student_id),
            },
        )


async def drive_workload(
    base_url: str,
    tokens: Mapping[uuid.UUID, str],
    coaches: CoachRoster,
    *,
    rate: float,
    duration: float,
    seed: int,
    subjects: Sequence[str] = SUBJECTS,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
) -> WorkloadResult:
    """Send ``rate`` coach writes per second for ``duration`` seconds to the API at ``base_url``.

    The run schedules ``int(rate * duration)`` writes and returns once every sent write
    got a response or timed out, so it lasts about ``duration + request_timeout`` seconds
    at most.
    At most ``max_in_flight`` writes wait for a response at once, over as many
    connections. Requests go only to ``base_url``: proxy settings from the environment
    are ignored.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate={rate} and duration={duration} must both be positive.")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight={max_in_flight} is invalid; allow at least one write in flight.")
    if not subjects:
        raise ValueError("subjects is empty; give at least one subject for the tasks and evaluations.")
    planner = _WritePlanner(random.Random(seed), coaches, subjects)
    if not planner.created:
        raise ValueError("coaches is invalid: no coach has a student. Give at least one coach with students.")
    missing_tokens = [str(coach_id) for coach_id in planner.created if coach_id not in tokens]
    if missing_tokens:
        raise ValueError(f"tokens has no bearer token for coaches {', '.join(missing_tokens[:5])}.")

    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=request_timeout, trust_env=False
    ) as client:
        sender = _Sender(client, tokens, planner)
        return await _run_timetable(sender, planner, rate, duration, max_in_flight)


async def _run_timetable(
    sender: _Sender, planner: _WritePlanner, rate: float, duration: float, max_in_flight: int
) -> WorkloadResult:
    loop = asyncio.get_running_loop()
    scheduled = int(rate * duration)
    not_sent = sent_late = 0
    pending: set[asyncio.Task[None]] = set()
    started_at = datetime.now(UTC)
    start = loop.time()

    log.info("workload started", extra={"rate": rate, "duration": duration, "writes": scheduled})
    for index in range(scheduled):
        offset = index / rate
        delay = start + offset - loop.time()
        # Sleeping even when behind lets responses in, so the in-flight count can go down.
        await asyncio.sleep(max(0.0, delay))
        if sender.in_flight >= max_in_flight:
            not_sent += 1
            continue
        if loop.time() - start - offset > LATE_AFTER_SECONDS:
            sent_late += 1

        task = sender.start(planner.next_write(), offset)
        pending.add(task)
        task.add_done_callback(pending.discard)

    if pending:
        await asyncio.gather(*pending)
    elapsed = loop.time() - start

    result = WorkloadResult(sender.records, scheduled, not_sent, sent_late, started_at, elapsed)
    log.info(
        "workload finished",
        extra={
            "attempted": result.attempted,
            "succeeded": result.succeeded,
            "failed": result.failed,
            "not_sent": not_sent,
            "sent_late": sent_late,
            "elapsed_seconds": round(elapsed, 2),
        },
    )
    return result
