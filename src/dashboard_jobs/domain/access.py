"""Access rules: the students each role may read and write.

Admins reach every student. A coach reaches the students linked to them in
``coach_students`` and a parent the children linked in ``parent_students``. Parents only
read. Coaches and parents get the same Forbidden for a student that exists but is not
theirs and for one that does not exist, so they cannot learn which student ids exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.domain.errors import Forbidden, NotFound
from dashboard_jobs.domain.models import CoachStudent, ParentStudent, Role, Student


@dataclass(frozen=True)
class Principal:
    """The authenticated account a request acts for."""

    account_id: uuid.UUID
    role: Role


async def ensure_can_access(session: AsyncSession, principal: Principal, student_id: uuid.UUID) -> None:
    """Raise Forbidden unless ``principal`` may read ``student_id``'s data.

    Raises NotFound instead for an admin asking for a student that does not exist.
    """
    if principal.role is Role.ADMIN:
        if not await session.scalar(select(exists().where(Student.id == student_id))):
            raise NotFound("student", student_id)
        return

    if principal.role is Role.COACH:
        link = exists().where(CoachStudent.coach_id == principal.account_id, CoachStudent.student_id == student_id)
    elif principal.role is Role.PARENT:
        link = exists().where(ParentStudent.parent_id == principal.account_id, ParentStudent.student_id == student_id)
    else:
        raise Forbidden()

    if not await session.scalar(select(link)):
        raise Forbidden()


def ensure_can_write(principal: Principal) -> None:
    """Raise Forbidden for roles that only read, before any row is looked up."""
    if principal.role is Role.PARENT:
        raise Forbidden("read_only_role")


async def ensure_can_write_student(session: AsyncSession, principal: Principal, student_id: uuid.UUID) -> None:
    """Raise Forbidden (NotFound for an admin and an unknown student) unless ``principal`` may write."""
    ensure_can_write(principal)
    await ensure_can_access(session, principal, student_id)
