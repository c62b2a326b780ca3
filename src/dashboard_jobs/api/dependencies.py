"""Request dependencies shared by the routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.session_factory


SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]

CorrelationId = Annotated[
    uuid.UUID | None,
    Header(
        alias="X-Correlation-ID",
        description="UUID that ties this request to the events it causes; "
        "stored as the correlation id of the outbox event.",
    ),
]
