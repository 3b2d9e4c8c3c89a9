"""A store at a schema revision this facta does not know (written by a newer facta):
every way in is refused with one facta error, nothing changed (issue 10, leftover 3)."""

from __future__ import annotations

from typing import Any

import pytest

from facta import migrations
from facta.eventstore import EventStore, UnknownSchemaRevision
from facta.eventstore.database import Database, resolve_url


async def _stamp(url: str, *revisions: str) -> None:
    database = Database.create(url)
    try:
        def stamp(conn: Any) -> None:
            conn.exec_driver_sql(f"DELETE FROM {migrations.VERSION_TABLE}")
            for revision in revisions:
                conn.exec_driver_sql(f"INSERT INTO {migrations.VERSION_TABLE} (version_num) VALUES ('{revision}')")

        await database.write(stamp)
    finally:
        await database.dispose()


def expected(url: str, revision: str = "9999") -> str:
    where = resolve_url(url).render_as_string(hide_password=True)
    known = migrations.revisions()
    return (f"{where} is at schema revision {revision!r}, which this facta does not know (it knows {known[0]} to"
            f" {known[-1]}): it was probably written by a newer facta; upgrade facta")


async def _version_rows(url: str) -> list[str]:
    database = Database.create(url)
    try:
        return await database.read(lambda conn: sorted(r[0] for r in conn.exec_driver_sql(
            f"SELECT version_num FROM {migrations.VERSION_TABLE}")))
    finally:
        await database.dispose()


async def test_every_library_entry_refuses_an_unknown_revision(migrated_url: str) -> None:
    await _stamp(migrated_url, "9999")
    message = expected(migrated_url)
    for open_it in (lambda: EventStore.open(migrated_url), lambda: EventStore.open(migrated_url, migrate=True),
                    lambda: migrations.upgrade_url(migrated_url)):
        with pytest.raises(UnknownSchemaRevision) as caught:
            await open_it()
        assert str(caught.value) == message
        assert caught.value.revision == "9999"
    database = Database.create(migrated_url)
    try:
        assert await migrations.current(database) == "9999"  # what the table holds, as before
        for call in (lambda: migrations.known_current(database), lambda: migrations.upgrade(database),
                     lambda: migrations.upgrade(database, "0003"), lambda: migrations.downgrade(database, "0002"),
                     lambda: migrations.downgrade(database, "base", drop_events=True)):
            with pytest.raises(UnknownSchemaRevision) as caught:
                await call()
            assert str(caught.value) == message
    finally:
        await database.dispose()
    assert await _version_rows(migrated_url) == ["9999"]  # nothing changed


async def test_two_revisions_at_once_are_refused_too(migrated_url: str) -> None:
    head = migrations.head()
    await _stamp(migrated_url, "0005", head)
    with pytest.raises(UnknownSchemaRevision) as caught:
        await EventStore.open(migrated_url, migrate=True)
    assert str(caught.value) == expected(migrated_url, f"0005, {head}")
    assert await _version_rows(migrated_url) == ["0005", head]


async def test_a_known_revision_still_upgrades(migrated_url: str) -> None:
    database = Database.create(migrated_url)
    try:
        await migrations.downgrade(database, "0005")
        assert await migrations.known_current(database) == "0005"
        await migrations.upgrade(database)
        assert await migrations.known_current(database) == migrations.head()
    finally:
        await database.dispose()
