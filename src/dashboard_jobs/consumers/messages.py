"""Decode incoming AMQP messages into an envelope and a contract model."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream import StreamMessage
from pydantic import ValidationError

from dashboard_jobs.contracts.base import CAUSATION_HEADER, TRACEPARENT_HEADER, VERSION_HEADER, Envelope, Event
from dashboard_jobs.contracts.registry import UnknownContractError, contract_for


JSON_CONTENT_TYPE = "application/json"


class PermanentMessageError(Exception):
    """The message can never be processed as it is; it goes to the dead-letter queue."""


@dataclass(frozen=True)
class DecodedMessage:
    envelope: Envelope
    event: Event


async def keep_raw_body(message: StreamMessage[Any]) -> bytes:
    """FastStream decoder that returns the body untouched.

    FastStream's default decoder parses JSON before the handler runs, so an invalid body
    would fail outside the handler and escape the failure policy. decode() validates it.
    """
    return message.body


def decode(raw: AbstractIncomingMessage, expected: type[Event] | None = None) -> DecodedMessage:
    """Check the type, version and body of ``raw``; raise PermanentMessageError naming what is wrong."""
    if not raw.message_id:
        raise PermanentMessageError("message has no message_id property; the relay always sets one")
    try:
        message_id = uuid.UUID(raw.message_id)
    except ValueError:
        raise PermanentMessageError(f"message_id {raw.message_id!r} is not a UUID") from None

    # The relay always sends JSON; a message without a content type is accepted for tools
    # that publish by hand, but a declared other type is a producer bug.
    if raw.content_type not in (None, "", JSON_CONTENT_TYPE):
        raise PermanentMessageError(
            f"message {message_id} has content type {raw.content_type!r}; expected {JSON_CONTENT_TYPE!r}"
        )

    event_type = raw.type
    if not event_type:
        raise PermanentMessageError(f"message {message_id} has no type property")
    version = (raw.headers or {}).get(VERSION_HEADER)
    if not isinstance(version, int) or isinstance(version, bool):
        raise PermanentMessageError(
            f"message {message_id} has header {VERSION_HEADER}={version!r}; expected an integer"
        )
    try:
        model = contract_for(event_type, version)
    except UnknownContractError as error:
        raise PermanentMessageError(str(error)) from None
    if expected is not None and model is not expected:
        raise PermanentMessageError(
            f"message {message_id} is {event_type} v{version}; this queue takes "
            f"{expected.TYPE} v{expected.VERSION}"
        )

    try:
        event = model.model_validate(json.loads(raw.body))
    except (ValueError, ValidationError) as error:
        # json.JSONDecodeError and UnicodeDecodeError are both ValueError.
        if isinstance(error, ValidationError):
            detail = _first_errors(error)
        else:
            detail = str(error).splitlines()[0]
        raise PermanentMessageError(f"message {message_id} has an invalid body: {detail}") from None

    headers = raw.headers or {}
    causation = headers.get(CAUSATION_HEADER)
    traceparent = headers.get(TRACEPARENT_HEADER)
    try:
        envelope = Envelope(
            message_id=message_id,
            type=event_type,
            version=version,
            occurred_at=_aware(raw.timestamp),
            correlation_id=uuid.UUID(raw.correlation_id) if raw.correlation_id else message_id,
            causation_id=uuid.UUID(str(causation)) if causation else None,
            traceparent=str(traceparent) if traceparent else None,
        )
    except (ValueError, ValidationError) as error:
        raise PermanentMessageError(f"message {message_id} has invalid envelope properties: {error}") from None
    return DecodedMessage(envelope=envelope, event=event)


def _first_errors(error: ValidationError, limit: int = 3) -> str:
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()[:limit]
    ]
    return "; ".join(parts)


def _aware(timestamp: datetime | None) -> datetime:
    # AMQP timestamps have second precision and no zone; the relay sends UTC.
    if timestamp is None:
        return datetime.now(UTC)
    return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
