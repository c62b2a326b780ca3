from alembic.script import ScriptDirectory
from sqlalchemy import text

from dashboard_jobs.db import alembic_config


async def test_database_is_at_the_latest_migration(settings, session_factory, clean_db):
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    async with session_factory() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == head
