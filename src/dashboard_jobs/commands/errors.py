"""One-line messages for the errors that stop a command before it can do its work.

An operator who mistyped a setting or started a command before its database needs the
value at fault and the fix, not a traceback. ``main()`` in the cli module calls
``describe_startup_error`` on any exception a command raises and prints the message
instead of the traceback when there is one.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator

import asyncpg
from alembic.util import CommandError
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import URL, make_url

from dashboard_jobs.runtime import BrokerUnavailableError, make_url_like
from dashboard_jobs.settings import MissingJwtSecretError, Settings

# Maximum length of a setting value in a message; longer values are cut with an ellipsis.
MAX_VALUE_CHARACTERS = 80


def describe_startup_error(error: BaseException) -> str | None:
    """Describe the first known start-up failure among ``error`` and its causes in one line, or return None."""
    for cause in _causes(error):
        if isinstance(cause, MissingJwtSecretError | BrokerUnavailableError):
            return str(cause)
        if isinstance(cause, CommandError):
            advice = " Pass `head` or a revision id from migrations/versions/." if "locate revision" in str(cause) else ""
            return f"Migration failed: {cause}.{advice}"
        if isinstance(cause, asyncpg.InvalidCatalogNameError):
            return _missing_database()
        if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
            return (
                f"PostgreSQL rejected the login at {_describe(_database_url())} ({cause}). "
                "Check the user and password in DATABASE_URL."
            )
        if isinstance(cause, asyncpg.UndefinedTableError):
            return (
                f"The database at {_describe(_database_url())} is missing its tables ({cause}). "
                "Run `dashboard-jobs migrate`, then run this command again."
            )
        if isinstance(cause, OSError) and _raised_inside(cause, "asyncpg"):
            return (
                f"PostgreSQL is not reachable at {_describe(_database_url())} "
                f"({type(cause).__name__}: {cause}). Start it with `docker compose up -d postgres`, "
                "or set DATABASE_URL to a running server."
            )
    return None


def format_settings_errors(error: ValidationError) -> list[str]:
    """Format each invalid setting as one line: its environment variable, its value and what is wrong.

    Secret values (JWT_SECRET) are never shown, and URLs are shown without their password.
    """
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            lines.append(f"Invalid settings: {message}")
            continue

        field = str(item["loc"][0])
        variable = field.upper() + "".join(f"[{part}]" for part in item["loc"][1:])
        value = _printable_value(field, item)
        shown = f"{variable}={value}" if value is not None else variable
        lines.append(f"Invalid setting {shown}: {message}")
    return lines


def format_settings_decode_error(error: SettingsError) -> str:
    """Format the line for a value pydantic-settings could not decode, such as a list that is not JSON."""
    field = re.search(r'error parsing value for field "(\w+)"', str(error))
    if field is None:
        return f"Invalid settings: {error}"
    return (
        f"Invalid setting {field.group(1).upper()}: it is not valid JSON; list settings are "
        "written in JSON, for example '[1, 10, 60]'"
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """Yield ``error``, then what it wraps: causes, implicit contexts, a DBAPI error's original."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current

        linked = [current.__cause__, getattr(current, "orig", None)]
        if not current.__suppress_context__:
            linked.append(current.__context__)
        if isinstance(current, BaseExceptionGroup):
            linked.extend(current.exceptions)
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _raised_inside(error: BaseException, package: str) -> bool:
    # A refused connection is a plain OSError, so the frames it passed through show whether
    # the database driver raised it.
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_globals.get("__name__", "").partition(".")[0] == package:
            return True
        traceback = traceback.tb_next
    return False


def _missing_database() -> str:
    url = _database_url()
    if url is None or not url.database:
        return "The database does not exist. Set DATABASE_URL to an existing database."
    # libpq URLs may give a Unix socket folder as ?host=… instead of a host name.
    host = url.host or url.query.get("host")
    options = [("-h", host), ("-p", url.port), ("-U", url.username)]
    createdb = " ".join(["createdb", *(f"{flag} {value}" for flag, value in options if value), url.database])
    return (
        f"Database {url.database!r} does not exist on the PostgreSQL server at {_describe(url)}. "
        f"Create it with `{createdb}` and run `dashboard-jobs migrate`, "
        "or set DATABASE_URL to an existing database."
    )


def _database_url() -> URL | None:
    """Return DATABASE_URL as the command read it, or None when it is unset."""
    # The command loaded these settings before it failed, and Settings checked that the URL
    # parses, so reading them again returns the same URL.
    try:
        url = Settings().database_url
    except ValueError:
        return None
    return make_url(url) if url else None


def _describe(url: URL | None) -> str:
    return url.render_as_string(hide_password=True) if url is not None else "the embedded PostgreSQL server"


def _printable_value(field: str, item: typing.Mapping[str, object]) -> str | None:
    if item["type"] == "missing" or _is_secret(field):
        return None
    value = item.get("input")
    if isinstance(value, str) and field.endswith("_url"):
        value = _url_without_password(value)
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARACTERS else text[: MAX_VALUE_CHARACTERS - 1] + "…"


def _is_secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    if info is None:
        return False
    annotation = info.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _url_without_password(url: str) -> str:
    try:
        return make_url_like(url)
    except ValueError:
        # Not even a URL, so there is no password to hide either.
        return url
