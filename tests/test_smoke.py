from sqlalchemy import text


async def test_database_is_migrated(session_factory, clean_db):
    async with session_factory() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == "0001"
