"""alembic environment for facta's schema.

facta's commands hand alembic an open connection in ``config.attributes["connection"]``.
Run without one (plain ``alembic -c ...``), it connects to ``sqlalchemy.url`` itself, the
way facta does: one transaction for the whole run, on SQLite too (the stdlib driver would
otherwise commit each DDL statement at once, so a refused downgrade would stop half-done).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from facta.migrations import VERSION_TABLE


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    from facta.eventstore.database import Database

    database = Database.create(url)
    try:
        await database.write(_run)
    finally:
        await database.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone(context.config.get_main_option("sqlalchemy.url") or ""))
