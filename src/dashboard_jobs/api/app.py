"""The FastAPI application: domain writes and dashboard reads.

Build it with ``create_app(settings)``, or let uvicorn call ``app_factory``::

    uvicorn dashboard_jobs.api.app:app_factory --factory

Handlers write domain rows and outbox rows in one transaction and never talk to the
broker; the relay publishes the outbox. The exception is the admin operations endpoints on
dead-letter queues, which exist only in the broker. Logging is configured by the entry point.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard_jobs.api.auth import signing_algorithm
from dashboard_jobs.api.body_limit import install_body_limit
from dashboard_jobs.api.problems import install_problem_handlers
from dashboard_jobs.api.routes import dead_letters, evaluations, health, reports, sessions, students, tasks
from dashboard_jobs.db import create_engine, create_session_factory
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, engine: AsyncEngine | None = None) -> FastAPI:
    """Build the application.

    Without ``engine``, the lifespan creates one from DATABASE_URL and disposes of it at
    shutdown. With one, ``app.state.session_factory`` is ready at once, because clients
    such as httpx's ASGITransport do not run the lifespan, and the caller disposes of it.
    Raises RuntimeError when the JWT secret or the database URL is missing.
    """
    settings.require_jwt_secret()
    signing_algorithm(settings)
    database_url = settings.database_url
    if engine is None and not database_url:
        raise RuntimeError(
            "DATABASE_URL is not set. Set it to a PostgreSQL URL such as "
            "postgresql://user@127.0.0.1:5432/dashboard, or start the API with `dashboard-jobs api`."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        owned_engine = create_engine(database_url, pool_size=settings.database_pool_size)
        app.state.session_factory = create_session_factory(owned_engine)
        try:
            yield
        finally:
            await owned_engine.dispose()

    app = FastAPI(
        title="dashboard-jobs API",
        summary="Writes on students' tasks, evaluations and tutoring sessions, and dashboard reads.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if engine is not None:
        app.state.session_factory = create_session_factory(engine)

    install_problem_handlers(app)
    install_body_limit(app, settings.api_max_body_bytes)
    for router in (health.router, students.router, tasks.router, evaluations.router, sessions.router):
        app.include_router(router)
    app.include_router(reports.router)
    app.include_router(dead_letters.router)
    return app


def app_factory() -> FastAPI:
    """Build the application from the environment's settings, for ``uvicorn --factory``."""
    return create_app(Settings())
