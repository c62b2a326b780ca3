"""Authentication by bearer token and the role rules on dashboard reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from dashboard_jobs.api.auth import AuthenticationFailed, decode_token, mint_token
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.models import Role
from tests.factories import auth_headers, client, school  # noqa: F401

PROBLEM_JSON = "application/problem+json"
OTHER_SECRET = "another-secret-of-at-least-thirty-two-characters-0123"


def signed(settings, secret: str | None = None, **overrides) -> str:
    """Sign admin claims with ``overrides`` applied; an override of None removes that claim."""
    now = datetime.now(UTC)
    claims = {
        "role": "admin",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, secret or settings.require_jwt_secret(), algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_token_401_with_challenge(client, school):
    response = await client.get(f"/students/{school.student_id}/dashboard")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "urn:dashboard-jobs:problem:unauthenticated"
    assert body["detail"].startswith("Authentification requise.")


async def test_basic_scheme_counts_as_missing(client, school):
    response = await client.get(
        f"/students/{school.student_id}/dashboard", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "case",
    [
        "bad signature",
        "wrong issuer",
        "wrong audience",
        "missing expiry",
        "sub not a uuid",
        "unknown role",
        "unknown account",
        "role differs from account",
        "not a jwt",
    ],
)
async def test_invalid_token_is_401(client, settings, school, case):
    admin = str(school.admin.account_id)
    tokens = {
        "bad signature": lambda: signed(settings, OTHER_SECRET, sub=admin),
        "wrong issuer": lambda: signed(settings, sub=admin, iss="someone-else"),
        "wrong audience": lambda: signed(settings, sub=admin, aud="another-api"),
        "missing expiry": lambda: signed(settings, sub=admin, exp=None),
        "sub not a uuid": lambda: signed(settings, sub="admin"),
        "unknown role": lambda: signed(settings, sub=admin, role="teacher"),
        "unknown account": lambda: signed(settings, sub=str(uuid.uuid4())),
        "role differs from account": lambda: signed(settings, sub=str(school.coach.account_id), role="admin"),
        "not a jwt": lambda: "not-a-jwt",
    }

    response = await client.get(f"/students/{school.student_id}/dashboard", headers=bearer(tokens[case]()))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["detail"] == "Le jeton d'authentification est invalide."


async def test_expired_token_is_401_saying_so(client, settings, school):
    past = datetime.now(UTC) - timedelta(hours=2)
    token = signed(settings, sub=str(school.admin.account_id), iat=past, exp=past + timedelta(hours=1))

    response = await client.get(
        f"/students/{school.student_id}/dashboard", headers={**bearer(token), "Accept-Language": "en"}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["detail"] == "The authentication token has expired. Request a new one."


async def test_minted_token_authenticates(client, settings, school):
    token = mint_token(settings, school.coach.account_id, "coach", ttl_seconds=60)

    response = await client.get(f"/students/{school.student_id}/dashboard", headers=bearer(token))

    assert response.status_code == 200


def test_mint_token_claims(settings):
    account_id = uuid.uuid4()

    token = mint_token(settings, account_id, Role.PARENT, ttl_seconds=120)

    claims = jwt.decode(
        token, settings.require_jwt_secret(), algorithms=["HS256"], audience=settings.jwt_audience
    )
    assert claims["sub"] == str(account_id)
    assert claims["role"] == "parent"
    assert claims["iss"] == settings.jwt_issuer
    assert claims["exp"] - claims["iat"] == 120
    assert decode_token(settings, token) == Principal(account_id, Role.PARENT)


@pytest.mark.parametrize("ttl_seconds", [0, -60])
def test_mint_token_rejects_non_positive_lifetime(settings, ttl_seconds):
    with pytest.raises(ValueError, match="ttl_seconds"):
        mint_token(settings, uuid.uuid4(), Role.ADMIN, ttl_seconds=ttl_seconds)


def test_mint_token_rejects_unknown_role(settings):
    with pytest.raises(ValueError):
        mint_token(settings, uuid.uuid4(), "teacher")


def test_decode_rejects_asymmetric_algorithm(settings):
    token = mint_token(settings, uuid.uuid4(), Role.ADMIN)
    misconfigured = settings.model_copy(update={"jwt_algorithm": "RS256"})

    with pytest.raises(RuntimeError, match="JWT_ALGORITHM"):
        decode_token(misconfigured, token)


def test_decode_reports_expiry_apart(settings):
    past = datetime.now(UTC) - timedelta(minutes=10)
    token = signed(settings, sub=str(uuid.uuid4()), iat=past, exp=past + timedelta(minutes=1))

    with pytest.raises(AuthenticationFailed) as failure:
        decode_token(settings, token)

    assert failure.value.code == "auth.expired"


# Who reads which dashboard


async def test_coach_reads_only_own_students(client, settings, school):
    headers = auth_headers(settings, school.coach)

    own = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)
    foreign = await client.get(f"/students/{school.other_student_id}/dashboard", headers=headers)
    unknown = await client.get(f"/students/{uuid.uuid4()}/dashboard", headers=headers)

    assert own.status_code == 200
    assert foreign.status_code == 403
    assert unknown.status_code == 403
    assert foreign.headers["content-type"] == unknown.headers["content-type"] == PROBLEM_JSON
    assert without_instance(foreign.json()) == without_instance(unknown.json())
    assert foreign.json()["detail"] == "Votre compte n'a pas accès à cet élève."


async def test_parent_reads_only_own_children(client, settings, school):
    headers = auth_headers(settings, school.parent)

    own = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)
    other = await client.get(f"/students/{school.other_student_id}/dashboard", headers=headers)
    unknown = await client.get(f"/students/{uuid.uuid4()}/dashboard", headers=headers)

    assert own.status_code == 200
    assert own.json()["student_id"] == str(school.student_id)
    assert other.status_code == 403
    assert unknown.status_code == 403
    assert without_instance(other.json()) == without_instance(unknown.json())


async def test_admin_reads_all_and_unknown_404(client, settings, school):
    headers = auth_headers(settings, school.admin)
    unknown_id = uuid.uuid4()

    first = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)
    second = await client.get(f"/students/{school.other_student_id}/dashboard", headers=headers)
    unknown = await client.get(f"/students/{unknown_id}/dashboard", headers=headers)

    assert first.status_code == second.status_code == 200
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == f"Aucun élève n'a l'identifiant {unknown_id}."


async def test_health_needs_no_token(client):
    assert (await client.get("/health/live")).status_code == 200


def without_instance(problem: dict) -> dict:
    return {key: value for key, value in problem.items() if key != "instance"}
