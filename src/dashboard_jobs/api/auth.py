"""Bearer token authentication: HMAC-signed JWTs naming an account and its role.

A token carries ``sub`` (the account UUID), ``role`` (admin, coach or parent), ``iss``,
``aud``, ``iat`` and ``exp``. A request is authenticated only when the signature, issuer,
audience and expiry are valid and ``accounts`` still contains that account with that role.
So deleting an account or changing its role revokes its tokens.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.models import Account, Role
from dashboard_jobs.settings import Settings

__all__ = ["AuthenticationFailed", "CurrentPrincipal", "Principal", "authenticate", "mint_token"]

log = logging.getLogger(__name__)

# Only symmetric algorithms are accepted, because with an asymmetric one configured the shared
# secret would be passed to PyJWT as a public key.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="JWT from `dashboard-jobs token ACCOUNT_ID ROLE`, sent as `Authorization: Bearer <token>`.",
)


class AuthenticationFailed(Exception):
    """The request has no usable credentials; ``code`` is auth.missing, auth.invalid or auth.expired."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def signing_algorithm(settings: Settings) -> str:
    """Return the configured JWT algorithm, raising when it is not an HMAC algorithm."""
    if settings.jwt_algorithm not in HMAC_ALGORITHMS:
        raise RuntimeError(
            f"JWT_ALGORITHM {settings.jwt_algorithm!r} is not supported. "
            f"Use one of {', '.join(sorted(HMAC_ALGORITHMS))}."
        )
    return settings.jwt_algorithm


def mint_token(settings: Settings, account_id: uuid.UUID, role: Role | str, ttl_seconds: int = 3600) -> str:
    """Return a signed token for ``account_id`` acting as ``role``, valid for ``ttl_seconds``."""
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    issued_at = datetime.now(UTC)
    claims = {
        "sub": str(account_id),
        "role": Role(role).value,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued_at,
        "exp": issued_at + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, settings.require_jwt_secret(), algorithm=signing_algorithm(settings))


def decode_token(settings: Settings, token: str) -> Principal:
    """Return the principal a token names, raising AuthenticationFailed when it is not valid.

    Checks the signature, expiry, issuer and audience, not whether the account exists.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.require_jwt_secret(),
            algorithms=[signing_algorithm(settings)],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationFailed("auth.expired") from None
    except jwt.InvalidTokenError as error:
        log.info("token rejected", extra={"reason": type(error).__name__})
        raise AuthenticationFailed("auth.invalid") from None

    try:
        return Principal(account_id=uuid.UUID(claims["sub"]), role=Role(claims.get("role")))
    except (TypeError, ValueError):
        log.info("token rejected", extra={"reason": "malformed sub or role claim"})
        raise AuthenticationFailed("auth.invalid") from None


async def authenticate(
    request: Request,
    session_factory: SessionFactory,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Return the principal of the request's bearer token, raising AuthenticationFailed otherwise."""
    if credentials is None:
        raise AuthenticationFailed("auth.missing")
    principal = decode_token(request.app.state.settings, credentials.credentials)

    async with session_factory() as session:
        stored_role = await session.scalar(select(Account.role).where(Account.id == principal.account_id))
    if stored_role != principal.role:
        log.info(
            "token rejected",
            extra={"reason": "unknown account or changed role", "account_id": str(principal.account_id)},
        )
        raise AuthenticationFailed("auth.invalid")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
