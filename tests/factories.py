"""Test data: accounts, students and their links, and API clients acting as an account."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dashboard_jobs.api.app import create_app
from dashboard_jobs.api.auth import mint_token
from dashboard_jobs.contracts import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.models import (
    Account,
    CoachStudent,
    OutboxMessage,
    ParentStudent,
    Role,
    Student,
)
from dashboard_jobs.settings import Settings


async def add_student(session_factory: async_sessionmaker[AsyncSession], first_name: str = "Léa") -> uuid.UUID:
    async with session_factory() as session, session.begin():
        student = Student(id=uuid.uuid4(), first_name=first_name, last_name="Martin", grade="4e")
        session.add(student)
    return student.id


async def add_account(session_factory: async_sessionmaker[AsyncSession], role: Role) -> uuid.UUID:
    account_id = uuid.uuid4()
    async with session_factory() as session, session.begin():
        session.add(
            Account(id=account_id, email=f"{role}-{account_id.hex[:12]}@example.org", display_name=f"{role} test", role=role)
        )
    return account_id


async def link_coach(session_factory: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, student_id: uuid.UUID) -> None:
    async with session_factory() as session, session.begin():
        session.add(CoachStudent(coach_id=coach_id, student_id=student_id))


async def link_parent(session_factory: async_sessionmaker[AsyncSession], parent_id: uuid.UUID, student_id: uuid.UUID) -> None:
    async with session_factory() as session, session.begin():
        session.add(ParentStudent(parent_id=parent_id, student_id=student_id))


@dataclass(frozen=True)
class School:
    """Two students, each with their own coach and parent, and one admin."""

    admin: Principal
    coach: Principal
    other_coach: Principal
    parent: Principal
    other_parent: Principal
    student_id: uuid.UUID
    other_student_id: uuid.UUID


async def build_school(session_factory: async_sessionmaker[AsyncSession]) -> School:
    student_id = await add_student(session_factory, "Léa")
    other_student_id = await add_student(session_factory, "Hugo")
    principals = {}
    for name, role in (
        ("admin", Role.ADMIN),
        ("coach", Role.COACH),
        ("other_coach", Role.COACH),
        ("parent", Role.PARENT),
        ("other_parent", Role.PARENT),
    ):
        principals[name] = Principal(await add_account(session_factory, role), role)

    await link_coach(session_factory, principals["coach"].account_id, student_id)
    await link_coach(session_factory, principals["other_coach"].account_id, other_student_id)
    await link_parent(session_factory, principals["parent"].account_id, student_id)
    await link_parent(session_factory, principals["other_parent"].account_id, other_student_id)
    return School(student_id=student_id, other_student_id=other_student_id, **principals)


def auth_headers(settings: Settings, principal: Principal, **extra: str) -> dict[str, str]:
    token = mint_token(settings, principal.account_id, principal.role)
    return {"Authorization": f"Bearer {token}", **extra}


async def refresh_requests(session_factory: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with session_factory() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.type == DashboardSummaryRefreshRequestedV1.TYPE)
            .order_by(OutboxMessage.seq)
        )
        return list(rows)


async def count_rows(session_factory: async_sessionmaker[AsyncSession], model: type) -> int:
    async with session_factory() as session:
        return await session.scalar(select(func.count()).select_from(model))


@pytest.fixture
async def school(session_factory: async_sessionmaker[AsyncSession], clean_db: None) -> School:
    return await build_school(session_factory)


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        yield client
