"""Identity from a trusted gateway's headers, for the routes that kept the old X-Role contract.

The former reporter endpoint took the caller's role from ``X-Role`` (and the account from
``X-User-Id``) without any check. These headers are honoured only when the setting
``trust_gateway_identity_headers`` is true. That is safe only behind a gateway that
authenticates every caller, sets both headers itself and strips them from client requests:
anywhere else a client could claim to be an admin by sending ``X-Role: admin``. With the
setting false (the default) the headers are ignored and the bearer token decides.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select

from dashboard_jobs.api.auth import AuthenticationFailed, authenticate, bearer_scheme
from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.models import Account, Role

log = logging.getLogger(__name__)

ROLE_HEADER = "X-Role"
USER_ID_HEADER = "X-User-Id"


async def gateway_or_token_principal(
    request: Request,
    session_factory: SessionFactory,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Return the gateway's principal when its headers are trusted and present, else the token's."""
    settings = request.app.state.settings
    role = request.headers.get(ROLE_HEADER)
    user_id = request.headers.get(USER_ID_HEADER)
    if not settings.trust_gateway_identity_headers or role is None or user_id is None:
        return await authenticate(request, session_factory, credentials)

    principal = _parse_headers(role, user_id)
    # The account must exist with that role, as for a token, so deleting an account or
    # changing its role takes effect behind the gateway too.
    async with session_factory() as session:
        stored_role = await session.scalar(select(Account.role).where(Account.id == principal.account_id))
    if stored_role != principal.role:
        log.info("gateway identity rejected", extra={"reason": "unknown account or role", "account_id": user_id})
        raise AuthenticationFailed("auth.invalid")
    return principal


def _parse_headers(role: str, user_id: str) -> Principal:
    try:
        return Principal(account_id=uuid.UUID(user_id), role=Role(role.strip().lower()))
    except ValueError:
        log.info("gateway identity rejected", extra={"reason": "malformed X-Role or X-User-Id"})
        raise AuthenticationFailed("auth.invalid") from None


GatewayPrincipal = Annotated[Principal, Depends(gateway_or_token_principal)]
