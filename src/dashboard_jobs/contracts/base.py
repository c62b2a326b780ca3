"""The base of every message contract and the envelope that travels with it."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# AMQP header that carries the contract version. The event type travels in the AMQP
# `type` property, so a consumer routes and rejects a message without parsing its body.
VERSION_HEADER = "x-contract-version"
CAUSATION_HEADER = "x-causation-id"
TRACEPARENT_HEADER = "traceparent"


class Event(BaseModel):
    """A message body. Subclasses set TYPE and VERSION, which identify the contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]


class Envelope(BaseModel):
    """Metadata of one message, carried as AMQP properties and headers, never in the body."""

    model_config = ConfigDict(frozen=True)

    message_id: uuid.UUID
    type: str
    version: int = Field(ge=1)
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    traceparent: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

    def headers(self) -> dict[str, str | int]:
        """Return the AMQP headers of this envelope (type and ids travel as properties)."""
        headers: dict[str, str | int] = {VERSION_HEADER: self.version}
        if self.causation_id is not None:
            headers[CAUSATION_HEADER] = str(self.causation_id)
        if self.traceparent is not None:
            headers[TRACEPARENT_HEADER] = self.traceparent
        return headers

