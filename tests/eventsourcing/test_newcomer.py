"""What a newcomer met driving an eventsourcing application on facta (the break-it pass of
issue 13): each test pins the right behaviour of one finding."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent

from facta.domain.reference import Account
from facta.eventsourcing import persistence
from facta.eventstore import EventStore, Repository


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    persistence._close_all()


def env(url: str, **more: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": url, **more}


class Dogs(Application[str]):
    pass


async def _open_account(url: str, stream_id: str) -> None:
    async with await EventStore.open(url) as store:
        account = Account.open(stream_id, owner="alice", currency="EUR")
        account.deposit(100)
        await Repository(store).save(account)


def test_an_application_alive_at_interpreter_exit_prints_no_finaliser_error(tmp_path: Path) -> None:
    # A System's applications still referenced by module globals die after the modules'
    # globals are cleared: FactaFactory.__del__ used contextlib there and printed
    # "Exception ignored in: <function FactaFactory.__del__ ...> TypeError" after a clean run.
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    script = (
        "from eventsourcing.application import Application\n"
        "from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System\n"
        "class Dogs(Application): pass\n"
        "class Counters(ProcessApplication): pass\n"
        f"url = {url!r}\n"
        "runner = SingleThreadedRunner(System(pipes=[[Dogs, Counters]]),\n"
        "                              env=dict(PERSISTENCE_MODULE='facta.eventsourcing', FACTA_DATABASE_URL=url))\n"
        "runner.start()\n"
        "dogs = runner.get(Dogs)\n"
        "runner.stop()\n"
        "print('done')\n"
    )
    (tmp_path / "bank_script.py").write_text(script)  # run as a file: `-c` tears down in another order
    done = subprocess.run([sys.executable, str(tmp_path / "bank_script.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert "FactaFactory.__del__" not in done.stderr, done.stderr


def test_an_application_inside_a_coroutine_is_one_line_saying_to_use_a_thread(migrated_url: str) -> None:
    async def make() -> None:
        Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))

    with pytest.raises(OperationalError) as made:
        asyncio.run(make())
    assert str(made.value) == (
        "facta.eventsourcing blocks, and was called inside a running event loop: make and call the application "
        "in a thread there, e.g. `await asyncio.to_thread(app.save, aggregate)`")

    app = Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))

    async def save() -> None:
        app.recorder.insert_events([StoredEvent("dog-1", 1, "t:T", b"{}")])

    with pytest.raises(OperationalError, match="inside a running event loop: make and call"):
        asyncio.run(save())
    assert app.recorder.select_events("dog-1") == []  # nothing written

    async def threaded() -> list[int] | None:
        dog = Aggregate()
        await asyncio.to_thread(app.save, dog)
        return [n.originator_version for n in await asyncio.to_thread(app.recorder.select_events, dog.id)]

    assert asyncio.run(threaded()) == [1]  # the advice works
    app.close()


async def test_an_event_on_a_stream_of_facta_own_account_is_an_integrity_error(migrated_url: str) -> None:
    await _open_account(migrated_url, "acc-shared")

    def insert() -> None:
        app = Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))
        try:
            app.recorder.insert_events([StoredEvent("acc-shared", 3, "t:T", b"{}")])
        finally:
            app.close()

    with pytest.raises(IntegrityError) as refused:  # was DatabaseError: the id is taken, a conflict
        await asyncio.to_thread(insert)
    assert str(refused.value) == "stream 'acc-shared' is of stream type 'account', not 'Dogs'"


async def test_an_application_does_not_read_another_stream_type_events(migrated_url: str) -> None:
    await _open_account(migrated_url, "acc-shared")

    def get() -> object:
        app = Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))
        try:
            return [e.topic for e in app.recorder.select_events("acc-shared")]
        finally:
            app.close()

    assert await asyncio.to_thread(get) == []  # facta's Account's events are not this application's


async def test_a_snapshot_on_a_stream_of_another_stream_type_is_refused(migrated_url: str) -> None:
    await _open_account(migrated_url, "acc-shared")

    def snapshot() -> None:
        app = Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))
        try:
            app.factory.aggregate_recorder("snapshots").insert_events([StoredEvent("acc-shared", 2, "t:S", b"{}")])
        finally:
            app.close()

    with pytest.raises(IntegrityError, match="is of stream type 'account', not 'Dogs'"):
        await asyncio.to_thread(snapshot)


def test_an_unknown_id_of_another_application_is_not_found(migrated_url: str) -> None:
    app = Dogs(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(str(uuid4()))
    app.close()


class AccountNamed(Application[object]):
    name = "account"  # facta's reference Account's stream type


async def test_a_stream_id_that_is_not_a_uuid_in_the_notification_log_is_one_data_error(migrated_url: str) -> None:
    # An application named like facta's own aggregates' stream type, with UUID ids, reads
    # their notifications: was a bare ValueError "badly formed hexadecimal UUID string".
    await _open_account(migrated_url, "acc-x")

    def read() -> object:
        app = AccountNamed(env=env(migrated_url))
        try:
            return app.recorder.select_notifications(1, 10)
        finally:
            app.close()

    with pytest.raises(DataError) as refused:
        await asyncio.to_thread(read)
    assert str(refused.value) == (
        "stream id 'acc-x' of stream type 'account' is not a UUID: it was written with ORIGINATOR_ID_TYPE=text or "
        "by facta's own aggregates of that stream type (set ORIGINATOR_ID_TYPE=text, or give the application a "
        "name of its own)")

    def read_text() -> list[tuple[object, int]]:
        app = AccountNamed(env=env(migrated_url, ORIGINATOR_ID_TYPE="text"))
        try:
            return [(n.originator_id, n.originator_version) for n in app.recorder.select_notifications(1, 10)]
        finally:
            app.close()

    assert await asyncio.to_thread(read_text) == [("acc-x", 1), ("acc-x", 2)]


def test_closing_an_application_under_a_waiting_subscription_is_one_line_and_nothing_on_stderr(
        migrated_url: str, tmp_path: Path) -> None:
    # The follower's thread got its one line, but the process printed "exception calling
    # callback ... RuntimeError: Event loop is closed" and "Task was destroyed but it is
    # pending!" (the waiting call's task outlived the facade's loop).
    script = (
        "import threading, time\n"
        "from eventsourcing.application import Application\n"
        "class Dogs(Application): pass\n"
        f"app = Dogs(env=dict(PERSISTENCE_MODULE='facta.eventsourcing', FACTA_DATABASE_URL={migrated_url!r}))\n"
        "out = []\n"
        "def follow():\n"
        "    try:\n"
        "        for n in app.recorder.subscribe(gt=0):\n"
        "            out.append(n)\n"
        "    except Exception as e:\n"
        "        out.append(f'{type(e).__name__}: {e}')\n"
        "t = threading.Thread(target=follow); t.start()\n"
        "time.sleep(0.5)\n"
        "app.close()\n"
        "t.join()\n"
        "print(out[0].split(' (')[0], out[0].split(') ')[1])\n"
    )
    (tmp_path / "follower.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "follower.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "DatabaseError: this BlockingEventStore was closed while the call ran\n"
    assert done.stderr == ""


def test_an_application_made_before_a_fork_is_one_line_in_the_child_and_a_new_one_works(
        migrated_url: str, tmp_path: Path) -> None:
    # A web server's pre-forked workers (gunicorn --preload): the child used the parent's
    # store, whose loop thread did not come along, and hung forever (and the parent in waitpid).
    script = (
        "import os, sys\n"
        "from eventsourcing.application import Application\n"
        "from eventsourcing.domain import Aggregate\n"
        "class Dogs(Application): pass\n"
        f"env = dict(PERSISTENCE_MODULE='facta.eventsourcing', FACTA_DATABASE_URL={migrated_url!r})\n"
        "app = Dogs(env=env)\n"
        "app.save(Aggregate())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        app.save(Aggregate())\n"
        "    except Exception as e:\n"
        "        print('child:', type(e).__name__, str(e).split('; ')[-1], flush=True)\n"
        "    app.close()  # releases nothing of the child's own store\n"
        "    app2 = Dogs(env=env)\n"
        "    a = Aggregate()\n"
        "    app2.save(a)\n"
        "    print('child new app:', app2.repository.get(a.id).version, flush=True)\n"
        "    app2.close()\n"
        "    sys.exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent:', len(app.recorder.select_notifications(1, 10)))\n"
        "app.close()\n"
    )
    (tmp_path / "forked.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "forked.py")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("child: DatabaseError open a new one after the fork (an eventsourcing application: make it "
                           "after the fork)\nchild new app: 1\nparent: 2\n")
