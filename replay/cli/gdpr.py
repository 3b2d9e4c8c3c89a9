"""`facta gdpr forget`: erase a subject's personal data by destroying its key."""

from __future__ import annotations

import getpass
import sys

import click

from facta.eventstore.personal_data import forget_subject, forgotten_stream

from .app import async_command, cli, usage_error
from .options import TEXT, Text, database_option, open_store
from .output import echo_json, shown

_SUBJECT = Text("subject", 255)  # facta.eventstore.personal_data._SUBJECT_LIMIT


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment: the record names no actor
        return None


@cli.group("gdpr")
def gdpr_group() -> None:
    """Erase personal data (fields marked PersonalData) without rewriting history.

    \b
    Examples:
      facta gdpr forget rider-007 --yes
      facta gdpr forget acct-rider-001 --actor dpo@example.com --yes --json
    """


@gdpr_group.command("forget")
@click.argument("subject", type=_SUBJECT)
@click.option("--actor", type=TEXT["actor"], default=None, metavar="NAME",
              help="Who asks, kept in the erasure record (default: the OS user name).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def gdpr_forget(subject: str, actor: str | None, yes: bool, database_url: str, as_json: bool) -> None:
    """Destroy SUBJECT's data key: every field of personal data of SUBJECT reads as
    "[erased]" from now on, in every event, snapshot, projection rebuild and Kafka copy.
    The erasure is recorded (who, when, which subject; never the data) in the stream
    facta.gdpr/SUBJECT. Forgetting twice changes nothing. This cannot be undone.

    \b
    Examples:
      facta gdpr forget rider-007 --yes
      facta gdpr forget acct-rider-001 --actor dpo@example.com --yes --json

    \b
    Exit codes: 0 forgotten (now or before), 1 error, 2 usage.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("forgetting cannot be undone: give --yes to forget without a prompt")
        click.confirm(f"Destroy the key of subject {shown(subject)}? Its personal data cannot be read again", abort=True)
    async with await open_store(database_url) as store:
        changed = await forget_subject(store, subject, actor=actor if actor is not None else _user())
    stream = forgotten_stream(subject)
    if as_json:
        echo_json({"subject": subject, "forgotten_now": changed, "record_stream": stream})
    elif changed:
        click.echo(f"forgot subject {shown(subject)}: its key is destroyed; the erasure is recorded in {shown(stream)}")
    else:
        click.echo(f"subject {shown(subject)} was forgotten before: nothing to do")
