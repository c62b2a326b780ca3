"""What the fault scenarios send through the pipeline: a backlog of writes, coach writes, report requests."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.api.auth import mint_token
from dashboard_jobs.contracts.reports import RequestedByCommand
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.demo.school import School
from dashboard_jobs.domain.periods import Period, previous_period, utc_now
from dashboard_jobs.domain.subjects import SUBJECTS
from dashboard_jobs.outbox.writer import NOTIFY_CHANNEL
from dashboard_jobs.producers.reports import enqueue_report_requests
from dashboard_jobs.settings import Settings
from tests.helpers import wait_for

# Each created task and its refresh request go in together, as services.create_task writes
# them, but for many students in one statement so a backlog of thousands takes a moment.
TASK_BACKLOG = text(
    """
    WITH chosen AS (
        SELECT unnest(CAST(:student_ids AS uuid[])) AS student_id
    ),
    created AS (
        INSERT INTO tasks (id, student_id, title, subject, due_at)
        SELECT gen_random_uuid(), chosen.student_id, 'Fiche de révision n° ' || n, :subject,
               now() + n * interval '1 hour'
        FROM generate_series(1, :per_student) AS n
        CROSS JOIN chosen
        RETURNING student_id
    )
    INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers)
    SELECT gen_random_uuid(), 'student', CAST(student_id AS text), :type, :version,
           jsonb_build_object('student_ids', jsonb_build_array(student_id), 'reason', 'task.created',
                              'requested_at', now()),
           jsonb_build_object('correlation_id', gen_random_uuid())
    FROM created
    """
)

WRITE_PAUSE_SECONDS = 0.05
REQUEST_TIMEOUT_SECONDS = 10.0


async def write_task_backlog(
    sessions: async_sessionmaker[AsyncSession], student_ids: Sequence[uuid.UUID], per_student: int
) -> int:
    """Create ``per_student`` tasks for each student, each with its refresh request, and return the count."""
    params = {
        "student_ids": list(student_ids),
        "per_student": per_student,
        "subject": SUBJECTS[1],
        "type": DashboardSummaryRefreshRequestedV1.TYPE,
        "version": DashboardSummaryRefreshRequestedV1.VERSION,
    }
    async with sessions() as session, session.begin():
        written = (await session.execute(TASK_BACKLOG, params)).rowcount
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return written


async def request_reports(
    sessions: async_sessionmaker[AsyncSession], student_ids: Sequence[uuid.UUID], period: Period | None = None
) -> uuid.UUID:
    """Enqueue one report request per student for ``period`` (default the previous month) and return the batch id."""
    period = period or previous_period(utc_now(), "Europe/Paris")
    async with sessions() as session, session.begin():
        return await enqueue_report_requests(
            session, student_ids, period, regenerate=False, requested_by=RequestedByCommand(command="fault-test")
        )


@dataclass(frozen=True)
class WriteOutcome:
    """One coach write sent to the API. ``status_code`` is None when no response arrived."""

    correlation_id: uuid.UUID
    student_id: uuid.UUID
    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class CoachWrites:
    """Coaches creating tasks and recording evaluations through the API until the block exits.

    ``writers`` loops send one write at a time each, pausing WRITE_PAUSE_SECONDS between
    writes, so the load stays steady while a fault comes and goes. Every write carries its
    own X-Correlation-ID, which the API stores on the write's refresh request.
    """

    def __init__(self, api_url: str, settings: Settings, school: School, *, writers: int = 4, seed: int = 7) -> None:
        self._api_url = api_url
        self._coaches = [(coach_id, list(students)) for coach_id, students in school.coaches if students]
        self._writers = writers
        self._rng = random.Random(seed)
        self._tokens = {coach_id: mint_token(settings, coach_id, "coach") for coach_id, _ in self._coaches}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self.outcomes: list[WriteOutcome] = []

    async def __aenter__(self) -> CoachWrites:
        self._client = httpx.AsyncClient(base_url=self._api_url, timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False)
        self._tasks = [asyncio.create_task(self._write_until_stopped()) for _ in range(self._writers)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()

    @property
    def succeeded(self) -> list[WriteOutcome]:
        return [outcome for outcome in self.outcomes if outcome.succeeded]

    @property
    def failed(self) -> list[WriteOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.succeeded]

    async def wait_for_more(self, successes: int, timeout: float = 30.0, check_alive=None) -> None:
        """Wait until ``successes`` more writes succeeded than when called."""
        target = len(self.succeeded) + successes

        async def enough() -> bool:
            if check_alive is not None:
                check_alive()
            return len(self.succeeded) >= target

        await wait_for(enough, timeout, f"{successes} more successful API writes")

    async def write_once(self) -> WriteOutcome:
        """Send one write from a random coach on one of their students and record its outcome."""
        coach_id, students = self._rng.choice(self._coaches)
        student_id = self._rng.choice(students)
        correlation_id = uuid.uuid4()
        path, body = self._next_write(student_id)
        headers = {
            "Authorization": f"Bearer {self._tokens[coach_id]}",
            "X-Correlation-ID": str(correlation_id),
        }
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(path, json=body, headers=headers)
            status_code = response.status_code
        except httpx.HTTPError as exception:
            error = f"{type(exception).__name__}: {exception}"
        outcome = WriteOutcome(correlation_id, student_id, status_code, error)
        self.outcomes.append(outcome)
        return outcome

    async def _write_until_stopped(self) -> None:
        while not self._stop.is_set():
            await self.write_once()
            # A pacing interval, not a wait for a condition: it keeps the offered load steady.
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=WRITE_PAUSE_SECONDS)
            except TimeoutError:
                pass

    def _next_write(self, student_id: uuid.UUID) -> tuple[str, dict[str, object]]:
        subject = self._rng.choice(SUBJECTS)
        now = datetime.now(UTC)
        if self._rng.random() < 0.5:
            due_at = now + timedelta(hours=self._rng.randint(-48, 240))
            return f"/students/{student_id}/tasks", {
                "title": "Exercices du chapitre 4",
                "subject": subject,
                "due_at": due_at.isoformat(),
            }
        evaluated_at = now - timedelta(minutes=self._rng.randint(0, 60 * 24 * 20))
        return f"/students/{student_id}/evaluations", {
            "subject": subject,
            "score": self._rng.randint(0, 40) / 2,
            "max_score": 20,
            "evaluated_at": evaluated_at.isoformat(),
        }


WRITES_WITHOUT_ONE_REQUEST = text(
    """
    WITH written AS (SELECT unnest(CAST(:correlation_ids AS text[])) AS correlation_id),
    requested AS (
        SELECT headers ->> 'correlation_id' AS correlation_id, count(*) AS requests
        FROM outbox WHERE type = :type GROUP BY 1
    )
    SELECT written.correlation_id, coalesce(requested.requests, 0)
    FROM written LEFT JOIN requested USING (correlation_id)
    WHERE coalesce(requested.requests, 0) <> 1
    """
)


async def writes_without_one_request(
    sessions: async_sessionmaker[AsyncSession], outcomes: Sequence[WriteOutcome]
) -> dict[str, int]:
    """Return the acknowledged writes that have no refresh request, or several, with that number."""
    params = {
        "correlation_ids": [str(outcome.correlation_id) for outcome in outcomes if outcome.succeeded],
        "type": DashboardSummaryRefreshRequestedV1.TYPE,
    }
    async with sessions() as session:
        return dict((await session.execute(WRITES_WITHOUT_ONE_REQUEST, params)).all())
