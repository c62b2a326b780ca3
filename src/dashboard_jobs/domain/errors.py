"""Errors the domain raises; each edge translates them in one place (the API to problem details)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""


class NotFound(DomainError):
    """The resource does not exist. Only raised where the caller may learn that (admins)."""

    def __init__(self, resource: str, resource_id: uuid.UUID) -> None:
        super().__init__(f"{resource} {resource_id} not found")
        self.resource = resource
        self.resource_id = resource_id


class Forbidden(DomainError):
    """The caller may not act on this student.

    The same error, with the same ``reason``, covers a student that does not exist, so a
    caller cannot probe which student ids exist.
    """

    def __init__(self, reason: str = "student_access") -> None:
        super().__init__(f"forbidden: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class FieldError:
    """One rejected input value. ``code`` selects the message and ``params`` fill it in."""

    field: str
    value: Any
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)


class InvalidInput(DomainError):
    """One or more input values break a domain rule."""

    def __init__(self, field: str, value: Any, code: str, **params: Any) -> None:
        self.errors: list[FieldError] = [FieldError(field, value, code, params)]
        super().__init__(self._describe())

    @classmethod
    def from_errors(cls, errors: Sequence[FieldError]) -> InvalidInput:
        if not errors:
            raise ValueError("InvalidInput needs at least one field error")
        first = errors[0]
        error = cls(first.field, first.value, first.code, **first.params)
        error.errors = list(errors)
        error.args = (error._describe(),)
        return error

    @property
    def field(self) -> str:
        return self.errors[0].field

    @property
    def value(self) -> Any:
        return self.errors[0].value

    def _describe(self) -> str:
        return "; ".join(f"{e.field}={e.value!r} is invalid ({e.code})" for e in self.errors)


class Conflict(DomainError):
    """The request is valid but the resource's current state does not allow it."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(f"conflict: {code}")
        self.code = code
        self.params = params
