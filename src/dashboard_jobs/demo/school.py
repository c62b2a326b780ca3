"""Generate a French collège with one school year of activity and bulk-load it for the demo.

The school is a pure function of ``(students, seed, today)``: every name, id, score and
timestamp comes from one ``random.Random(seed)`` consumed in a fixed order, so two loads
with the same arguments write identical rows. The year runs from 1 September of the
school year that contains ``today`` up to the start of ``today`` (midnight, Europe/Paris).
Every completion, evaluation and past session happened before that instant. The sessions
of the rest of this week and of next week are still planned.

NOTE: school holidays are not modelled. Tasks, marks and sessions continue every week,
summer included, so a ``today`` in July or August gives a year without a break.

Rows go in with COPY (asyncpg ``copy_records_to_table``) in chunks of students, inside one
transaction that first truncates the domain tables, so a rerun replaces the previous school.
No outbox rows are written: the caller rebuilds every summary once the load is done.
"""

from __future__ import annotations

import logging
import random
import time as clock
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

import asyncpg

from dashboard_jobs.db import asyncpg_dsn
from dashboard_jobs.domain.models import Role, SessionStatus, TaskStatus
from dashboard_jobs.domain.subjects import SUBJECTS

log = logging.getLogger(__name__)

PARIS = ZoneInfo("Europe/Paris")
GRADES = ("6e", "5e", "4e", "3e")
STUDENTS_PER_COACH = 25
SESSION_DURATIONS = (45, 60, 90)
MAX_SCORE = 20
# RFC 2606 reserves the .example top-level domain, so no demo address can reach a real inbox.
EMAIL_DOMAIN = "college-demo.example"
CHUNK_STUDENTS = 250

STUDENT_FIRST_NAMES = (
    "Emma", "Jade", "Louise", "Alice", "Chloé", "Lina", "Léa", "Rose", "Anna", "Mila",
    "Inès", "Ambre", "Julia", "Mia", "Léna", "Manon", "Juliette", "Lou", "Zoé", "Camille",
    "Agathe", "Jeanne", "Romane", "Nina", "Sarah", "Eva", "Louna", "Clara", "Adèle", "Lucie",
    "Gabriel", "Léo", "Raphaël", "Arthur", "Louis", "Lucas", "Adam", "Jules", "Hugo", "Maël",
    "Liam", "Noah", "Paul", "Ethan", "Tom", "Sacha", "Nathan", "Gabin", "Mohamed", "Aaron",
    "Théo", "Noé", "Timéo", "Victor", "Martin", "Axel", "Nolan", "Marius", "Enzo", "Mathis",
)
ADULT_FIRST_NAMES = (
    "Nathalie", "Isabelle", "Sylvie", "Catherine", "Sandrine", "Valérie", "Céline",
    "Stéphanie", "Aurélie", "Émilie", "Julie", "Caroline", "Sophie", "Karine", "Virginie",
    "Christelle", "Laetitia", "Amélie", "Hélène", "Claire", "Fatima", "Samia", "Nadia",
    "Philippe", "Stéphane", "Nicolas", "Christophe", "Laurent", "Sébastien", "Frédéric",
    "David", "Olivier", "Julien", "Thierry", "Éric", "Pascal", "Jérôme", "Guillaume",
    "Vincent", "Cédric", "Mickaël", "Arnaud", "Fabrice", "Karim", "Mehdi",
)
LAST_NAMES = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois",
    "Moreau", "Laurent", "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David",
    "Bertrand", "Morel", "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine",
    "Rousseau", "Vincent", "Muller", "Lefèvre", "Faure", "André", "Mercier", "Blanc",
    "Guérin", "Boyer", "Garnier", "Chevalier", "François", "Legrand", "Gauthier", "Garcia",
    "Perrin", "Robin", "Clément", "Morin", "Nicolas", "Henry", "Roussel", "Mathieu",
    "Gautier", "Masson", "Marchand", "Duval", "Denis", "Dumont", "Benali", "Lemaire",
    "Noël", "Meyer", "Dufour", "Nguyen",
)
# Placeholders: {n} a chapter or sheet number, {p} a textbook page.
TASK_TITLES: dict[str, tuple[str, ...]] = {
    "francais": (
        "Lire les chapitres {n} et {m} du roman",
        "Rédaction : sujet d'invention",
        "Exercices de grammaire p. {p}",
        "Apprendre la poésie par cœur",
        "Dictée préparée n° {n}",
    ),
    "mathematiques": (
        "Exercices {n} à {m} p. {p}",
        "Fiche de calcul mental n° {n}",
        "Problème ouvert n° {n}",
        "Réviser le chapitre {n} pour le contrôle",
        "Construction géométrique p. {p}",
    ),
    "histoire-geographie": (
        "Apprendre la leçon {n}",
        "Croquis : compléter la carte p. {p}",
        "Étude de document p. {p}",
        "Fiche de révision du chapitre {n}",
    ),
    "anglais": (
        "Vocabulary list n° {n}",
        "Workbook p. {p}",
        "Préparer une présentation orale",
        "Apprendre les verbes irréguliers (série {n})",
    ),
    "physique-chimie": (
        "Exercices {n} et {m} p. {p}",
        "Compte rendu de TP n° {n}",
        "Réviser les conversions d'unités",
        "Apprendre la leçon sur l'énergie",
    ),
    "svt": (
        "Schéma à compléter p. {p}",
        "Réviser le chapitre {n}",
        "Compte rendu de la sortie",
        "Exercices p. {p}",
    ),
}
GENERIC_TASK_TITLES = ("Exercices p. {p}", "Réviser le chapitre {n}", "Fiche de révision n° {n}")

STUDENT_COLUMNS = ("id", "first_name", "last_name", "grade", "created_at")
ACCOUNT_COLUMNS = ("id", "email", "display_name", "role", "created_at")
TASK_COLUMNS = (
    "id", "student_id", "title", "subject", "due_at", "status", "completed_at",
    "created_by", "created_at", "updated_at",
)
EVALUATION_COLUMNS = (
    "id", "student_id", "subject", "score", "max_score", "evaluated_at", "created_by", "created_at",
)
SESSION_COLUMNS = (
    "id", "student_id", "coach_id", "starts_at", "duration_minutes", "status", "created_at", "updated_at",
)
TRUNCATED_TABLES = (
    "students", "accounts", "coach_students", "parent_students", "tasks", "evaluations",
    "tutoring_sessions", "dashboard_summary", "outbox", "inbox",
)

# Scores are multiples of 0.5 between 0 and 20. Building each Decimal once keeps the
# generation loop free of string conversions.
_SCORES = tuple(Decimal(half) / 2 for half in range(2 * MAX_SCORE + 1))
_MAX_SCORE = Decimal(MAX_SCORE)


@dataclass(frozen=True)
class School:
    """The ids the demo needs after a load, and the number of rows written per table."""

    admin_id: uuid.UUID
    coaches: list[tuple[uuid.UUID, list[uuid.UUID]]]
    parents: list[tuple[uuid.UUID, list[uuid.UUID]]]
    counts: dict[str, int]

    @property
    def student_ids(self) -> list[uuid.UUID]:
        return [student_id for _, students in self.coaches for student_id in students]


@dataclass
class _Student:
    id: uuid.UUID
    first_name: str
    last_name: str
    grade: str
    created_at: datetime
    diligence: float
    ability: float
    yearly_progress: float
    subject_bias: dict[str, float]
    task_rotation: int
    evaluation_rotation: int
    session_weekday: int
    session_minute: int
    session_duration: int
    attendance: float
    coach_id: uuid.UUID | None = None


@dataclass(frozen=True)
class _Calendar:
    """The school year as seen from ``today``, whose start in Paris is ``cutoff``."""

    today: date
    year_start: date
    cutoff: datetime
    mondays: list[date]

    @classmethod
    def for_today(cls, today: date) -> _Calendar:
        year = today.year if today.month >= 9 else today.year - 1
        year_start = date(year, 9, 1)
        first_monday = year_start - timedelta(days=year_start.weekday())
        # Activity stops at the start of today, and the extra week carries the planned sessions.
        next_monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
        weeks = (next_monday - first_monday).days // 7 + 1
        mondays = [first_monday + timedelta(weeks=index) for index in range(weeks)]
        cutoff = datetime.combine(today, time(0), tzinfo=PARIS).astimezone(UTC)
        return cls(today, year_start, cutoff, mondays)


@dataclass(frozen=True)
class _People:
    admin_id: uuid.UUID
    roster: list[_Student]
    accounts: list[tuple]
    parents: list[tuple[uuid.UUID, list[uuid.UUID]]]
    coaches: list[tuple[uuid.UUID, list[uuid.UUID]]]


@lru_cache(maxsize=1024)
def _paris_offset(day: date) -> timedelta:
    offset = PARIS.utcoffset(datetime.combine(day, time(12)))
    if offset is None:
        raise RuntimeError(f"the Europe/Paris time zone returned no UTC offset for {day}")
    return offset


def local_time(day: date, minute_of_day: int) -> datetime:
    """Return the UTC instant of ``minute_of_day`` on ``day`` in Europe/Paris.

    The offset is the one at noon of that day, so the result is exact from 03:00 on,
    after any clock change of that day. Every lesson, homework and session time of the
    school is later than 03:00.
    """
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return midnight + timedelta(minutes=minute_of_day) - _paris_offset(day)


def _random_uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _email_local_part(*names: str) -> str:
    ascii_names = (
        unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace(" ", "-")
        for name in names
    )
    return ".".join(ascii_names)


def task_title(rng: random.Random, subject: str) -> str:
    """Return a plausible homework title for ``subject``, in French like the rest of the data."""
    template = rng.choice(TASK_TITLES.get(subject, GENERIC_TASK_TITLES))
    chapter = rng.randint(1, 12)
    return template.format(n=chapter, m=chapter + 1, p=rng.randint(8, 260))


def _evening(rng: random.Random, day: date) -> datetime:
    """Return a time between 17:00 and 21:30 on ``day``, when students do their homework."""
    return local_time(day, rng.randrange(17 * 60, 21 * 60 + 31, 5))


def _next_school_day(day: date) -> date:
    return day + timedelta(days=max(0, 7 - day.weekday())) if day.weekday() >= 5 else day


class _EmailBook:
    """Unique email addresses, numbered when a name repeats."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def address(self, *names: str) -> str:
        local_part = _email_local_part(*names)
        count = self._used.get(local_part, 0) + 1
        self._used[local_part] = count
        suffix = "" if count == 1 else str(count)
        return f"{local_part}{suffix}@{EMAIL_DOMAIN}"


def _draw_student(rng: random.Random, last_name: str, calendar: _Calendar) -> _Student:
    weekday, minute = rng.choice(
        (
            (rng.randrange(5), rng.choice((17 * 60, 17 * 60 + 30, 18 * 60, 18 * 60 + 30))),
            (2, rng.choice((13 * 60 + 30, 14 * 60 + 30, 15 * 60 + 30))),
            (5, rng.choice((9 * 60, 10 * 60, 11 * 60))),
        )
    )
    enrolled_on = calendar.year_start - timedelta(days=rng.randint(2, 20))
    return _Student(
        id=_random_uuid(rng),
        first_name=rng.choice(STUDENT_FIRST_NAMES),
        last_name=last_name,
        grade=rng.choice(GRADES),
        created_at=local_time(enrolled_on, rng.randrange(9 * 60, 17 * 60)),
        diligence=_clamp(rng.gauss(0.80, 0.12), 0.35, 0.99),
        ability=_clamp(rng.gauss(12.0, 3.0), 4.0, 18.5),
        yearly_progress=rng.gauss(0.5, 1.0),
        subject_bias={subject: rng.gauss(0.0, 1.5) for subject in SUBJECTS},
        task_rotation=rng.randrange(len(SUBJECTS)),
        evaluation_rotation=rng.randrange(len(SUBJECTS)),
        session_weekday=weekday,
        session_minute=minute,
        session_duration=rng.choice((45, 60, 60, 60, 90)),
        attendance=_clamp(rng.gauss(0.88, 0.06), 0.6, 0.99),
    )


def _draw_people(rng: random.Random, students: int, calendar: _Calendar) -> _People:
    """Draw the admin, the families (students and parents) and the coaches."""
    emails = _EmailBook()
    accounts_created_at = local_time(calendar.year_start - timedelta(days=25), 10 * 60)
    accounts: list[tuple] = []

    admin_id = _random_uuid(rng)
    admin_name = "Vie scolaire (administration)"
    accounts.append((admin_id, emails.address("vie-scolaire"), admin_name, Role.ADMIN.value, accounts_created_at))

    # A family is one or two parents and usually one child. A few have siblings, who share
    # both the family name and the parent accounts.
    roster: list[_Student] = []
    parents: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    while len(roster) < students:
        family_name = rng.choice(LAST_NAMES)
        children = min(rng.choices((1, 2, 3), weights=(86, 12, 2))[0], students - len(roster))
        family = [_draw_student(rng, family_name, calendar) for _ in range(children)]
        roster.extend(family)

        parent_count = 2 if rng.random() < 0.7 else 1
        for index in range(parent_count):
            parent_name = family_name if index == 0 or rng.random() < 0.75 else rng.choice(LAST_NAMES)
            first_name = rng.choice(ADULT_FIRST_NAMES)
            parent_id = _random_uuid(rng)
            joined_at = family[0].created_at + timedelta(hours=rng.randint(1, 72))
            email = emails.address(first_name, parent_name)
            accounts.append((parent_id, email, f"{first_name} {parent_name}", Role.PARENT.value, joined_at))
            parents.append((parent_id, [child.id for child in family]))

    coach_count = max(1, round(students / STUDENTS_PER_COACH))
    coaches: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    for _ in range(coach_count):
        first_name, last_name = rng.choice(ADULT_FIRST_NAMES), rng.choice(LAST_NAMES)
        coach_id = _random_uuid(rng)
        email = emails.address(first_name, last_name)
        accounts.append((coach_id, email, f"{first_name} {last_name}", Role.COACH.value, accounts_created_at))
        coaches.append((coach_id, []))

    # Round-robin over a shuffled roster gives every coach the same load, give or take one,
    # and a mix of grades and families.
    shuffled = list(roster)
    rng.shuffle(shuffled)
    for position, student in enumerate(shuffled):
        coach_id, coached = coaches[position % coach_count]
        student.coach_id = coach_id
        coached.append(student.id)

    return _People(admin_id, roster, accounts, parents, coaches)


def _draw_tasks(rng: random.Random, student: _Student, calendar: _Calendar) -> Iterator[tuple]:
    """Yield about three tasks a week, stopping at the start of today."""
    today = calendar.today
    rotation = student.task_rotation
    for monday in calendar.mondays:
        for _ in range(rng.choice((2, 3, 3, 4))):
            assigned_on = monday + timedelta(days=rng.randrange(5))
            created_at = local_time(assigned_on, rng.randrange(8 * 60, 16 * 60 + 31, 5))
            if assigned_on < calendar.year_start or created_at >= calendar.cutoff:
                continue
            subject = SUBJECTS[rotation % len(SUBJECTS)]
            rotation += 1
            due_on = _next_school_day(assigned_on + timedelta(days=rng.randint(2, 10)))
            due_at = local_time(due_on, 8 * 60)
            status, completed_at, updated_at = _draw_task_progress(rng, student, assigned_on, due_on, today)
            yield (
                _random_uuid(rng), student.id, task_title(rng, subject), subject, due_at, status,
                completed_at, student.coach_id, created_at, updated_at or created_at,
            )


def _draw_task_progress(
    rng: random.Random, student: _Student, assigned_on: date, due_on: date, today: date
) -> tuple[str, datetime | None, datetime | None]:
    """Return (status, completed_at, updated_at) as of the start of ``today``.

    Homework is done in the evening, on or after the day it was set and before today, so
    ``completed_at`` is always after ``created_at`` and before the cutoff. A task due
    before today is done with a probability equal to the student's diligence, sometimes a
    few days late. A missed task is caught up later with a chance that grows over four
    weeks, so the overdue tasks are mostly recent ones. A task still running is done or
    started in proportion to the time already elapsed.
    """
    if due_on < today:
        days_overdue = (today - due_on).days
        if rng.random() < student.diligence:
            if rng.random() < (1 - student.diligence) * 0.6:
                done_on = due_on + timedelta(days=rng.randint(0, min(4, days_overdue - 1)))
            else:
                done_on = assigned_on + timedelta(days=rng.randrange((due_on - assigned_on).days))
            completed_at = _evening(rng, done_on)
            return TaskStatus.DONE.value, completed_at, completed_at
        if days_overdue >= 2 and rng.random() < min(0.95, days_overdue / 28):
            completed_at = _evening(rng, due_on + timedelta(days=rng.randint(1, days_overdue - 1)))
            return TaskStatus.DONE.value, completed_at, completed_at
        if rng.random() < 0.25:
            started_on = assigned_on + timedelta(days=rng.randrange((due_on - assigned_on).days))
            return TaskStatus.IN_PROGRESS.value, None, _evening(rng, started_on)
        return TaskStatus.TODO.value, None, None

    days_open = (today - assigned_on).days
    elapsed = days_open / (due_on - assigned_on).days
    draw = rng.random()
    if draw < student.diligence * elapsed * 0.6:
        completed_at = _evening(rng, assigned_on + timedelta(days=rng.randrange(days_open)))
        return TaskStatus.DONE.value, completed_at, completed_at
    if draw < elapsed:
        started_on = assigned_on + timedelta(days=rng.randrange(days_open))
        return TaskStatus.IN_PROGRESS.value, None, _evening(rng, started_on)
    return TaskStatus.TODO.value, None, None


def _draw_evaluations(rng: random.Random, student: _Student, calendar: _Calendar) -> Iterator[tuple]:
    """Yield one mark out of 20 a week from the second week on, drawn around the student's level."""
    weeks = len(calendar.mondays)
    for index, monday in enumerate(calendar.mondays[1:], start=1):
        evaluated_on = monday + timedelta(days=rng.randrange(5))
        evaluated_at = local_time(evaluated_on, rng.randrange(8 * 60, 16 * 60 + 1, 30))
        if evaluated_at >= calendar.cutoff:
            continue
        subject = SUBJECTS[(student.evaluation_rotation + index) % len(SUBJECTS)]
        level = student.ability + student.subject_bias[subject] + student.yearly_progress * index / weeks
        score = _SCORES[round(_clamp(rng.gauss(level, 2.2), 0, MAX_SCORE) * 2)]
        # Marks are entered the same evening or up to three days later, never after the cutoff.
        lag = min(rng.randint(0, 3), (calendar.today - evaluated_on).days - 1)
        created_at = _evening(rng, evaluated_on + timedelta(days=lag))
        yield (
            _random_uuid(rng), student.id, subject, score, _MAX_SCORE, evaluated_at,
            student.coach_id, created_at,
        )


def _draw_sessions(rng: random.Random, student: _Student, calendar: _Calendar) -> Iterator[tuple]:
    """Yield one tutoring session a week at the student's slot, through the end of next week."""
    for monday in calendar.mondays[1:]:
        starts_at = local_time(monday + timedelta(days=student.session_weekday), student.session_minute)
        duration = student.session_duration if rng.random() < 0.9 else rng.choice(SESSION_DURATIONS)
        ends_at = starts_at + timedelta(minutes=duration)
        # Sessions are booked about a week ahead, but never before the student enrolled
        # and never after the cutoff.
        booked_at = starts_at - timedelta(days=7, hours=rng.randint(0, 48))
        created_at = min(
            max(booked_at, student.created_at + timedelta(hours=1)),
            calendar.cutoff - timedelta(minutes=rng.randint(30, 600)),
        )

        if ends_at > calendar.cutoff:
            status, updated_at = SessionStatus.PLANNED.value, created_at
        elif rng.random() < student.attendance:
            status = SessionStatus.DONE.value
            updated_at = min(ends_at + timedelta(minutes=rng.randint(5, 120)), calendar.cutoff)
        elif rng.random() < 0.6:
            status = SessionStatus.CANCELLED.value
            updated_at = max(starts_at - timedelta(hours=rng.randint(2, 48)), created_at)
        else:
            status = SessionStatus.NO_SHOW.value
            updated_at = min(ends_at + timedelta(minutes=rng.randint(5, 120)), calendar.cutoff)

        yield (
            _random_uuid(rng), student.id, student.coach_id, starts_at, duration, status,
            created_at, updated_at,
        )


async def _copy(connection: asyncpg.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
    if rows:
        await connection.copy_records_to_table(table, records=rows, columns=columns)
    return len(rows)


async def _copy_people(connection: asyncpg.Connection, people: _People) -> dict[str, int]:
    students = [(s.id, s.first_name, s.last_name, s.grade, s.created_at) for s in people.roster]
    coach_links = [(coach_id, student_id) for coach_id, coached in people.coaches for student_id in coached]
    parent_links = [(parent_id, student_id) for parent_id, children in people.parents for student_id in children]
    return {
        "students": await _copy(connection, "students", STUDENT_COLUMNS, students),
        "accounts": await _copy(connection, "accounts", ACCOUNT_COLUMNS, people.accounts),
        "coach_students": await _copy(connection, "coach_students", ("coach_id", "student_id"), coach_links),
        "parent_students": await _copy(connection, "parent_students", ("parent_id", "student_id"), parent_links),
    }


async def _copy_activity(
    connection: asyncpg.Connection, rng: random.Random, roster: list[_Student], calendar: _Calendar
) -> dict[str, int]:
    """Draw and copy the year's tasks, evaluations and sessions, a chunk of students at a time."""
    counts = {"tasks": 0, "evaluations": 0, "tutoring_sessions": 0}
    for start in range(0, len(roster), CHUNK_STUDENTS):
        tasks: list[tuple] = []
        evaluations: list[tuple] = []
        sessions: list[tuple] = []
        for student in roster[start : start + CHUNK_STUDENTS]:
            tasks.extend(_draw_tasks(rng, student, calendar))
            evaluations.extend(_draw_evaluations(rng, student, calendar))
            sessions.extend(_draw_sessions(rng, student, calendar))
        counts["tasks"] += await _copy(connection, "tasks", TASK_COLUMNS, tasks)
        counts["evaluations"] += await _copy(connection, "evaluations", EVALUATION_COLUMNS, evaluations)
        counts["tutoring_sessions"] += await _copy(connection, "tutoring_sessions", SESSION_COLUMNS, sessions)
    return counts


async def load_school(dsn: str, *, students: int = 2000, seed: int = 42, today: date) -> School:
    """Replace the school in the database at ``dsn`` with a generated one and return its ids.

    ``dsn`` is a PostgreSQL URL in the libpq or SQLAlchemy form. The load truncates the
    domain tables, the summary, the outbox and the inbox with CASCADE, which also empties
    every table holding a foreign key to them (reports, for instance), then writes the new
    rows in one transaction.
    """
    if students < 1:
        raise ValueError(f"students={students} is invalid; the school needs at least one student.")

    started = clock.perf_counter()
    rng = random.Random(seed)
    calendar = _Calendar.for_today(today)
    people = _draw_people(rng, students, calendar)

    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        async with connection.transaction():
            await connection.execute(f"TRUNCATE {', '.join(TRUNCATED_TABLES)} CASCADE")
            counts = await _copy_people(connection, people)
            counts |= await _copy_activity(connection, rng, people.roster, calendar)
        # Fresh statistics let the planner of the summary rebuild, which runs next, use the indexes.
        await connection.execute(f"ANALYZE {', '.join(TRUNCATED_TABLES)}")
    finally:
        await connection.close()

    seconds = round(clock.perf_counter() - started, 2)
    log.info("demo school loaded", extra={"seed": seed, "today": today.isoformat(), **counts, "seconds": seconds})
    return School(admin_id=people.admin_id, coaches=people.coaches, parents=people.parents, counts=counts)
