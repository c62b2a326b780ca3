"""Language negotiation and the message catalogue of the problem responses."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from starlette.requests import Request

from dashboard_jobs.api.problems import (
    MESSAGES,
    SUPPORTED_LANGUAGES,
    negotiate_language,
    problem_response,
    translate,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "fr"),
        ("", "fr"),
        ("en", "en"),
        ("EN-us", "en"),
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        ("en-GB,en;q=0.9,fr;q=0.8", "en"),
        ("fr;q=0.4, en;q=0.6", "en"),
        ("de, en;q=0.5", "en"),
        ("de, es", "fr"),
        ("en, fr", "en"),
        ("fr, en", "fr"),
        ("en;q=0", "fr"),
        ("fr;q=0, en;q=0.1", "en"),
        ("*", "fr"),
        ("fr;q=0, *;q=0.5", "en"),
        ("en;q=0.2, *;q=0.5", "fr"),
        ("en;q=abc, fr;q=0.1", "fr"),
        ("en;q=1.5", "fr"),
        ("en; level=1; q=0.8, fr; q=0.7", "en"),
        (" , ;q=1, en", "en"),
    ],
)
def test_negotiate_language(header, expected):
    assert negotiate_language(header) == expected


def test_every_message_has_every_language():
    incomplete = [message_id for message_id, texts in MESSAGES.items() if set(texts) != set(SUPPORTED_LANGUAGES)]

    assert incomplete == []


@pytest.mark.parametrize(
    "code",
    [
        "subject.unknown",
        "title.blank",
        "title.too_long",
        "datetime.naive",
        "choice.unknown",
        "score.out_of_range",
        "max_score.out_of_range",
        "number.too_many_decimals",
        "number.not_finite",
        "duration.out_of_range",
        "coach_id.required",
        "coach_id.not_self",
        "coach_id.not_a_coach",
        "forbidden.student_access",
        "forbidden.read_only_role",
        "not_found.student",
        "not_found.task",
        "not_found.session",
        "conflict.task.already_completed",
    ],
)
def test_domain_codes_have_messages(code):
    assert code in MESSAGES


def test_translate_fills_in_lists_and_decimals():
    text = translate("score.out_of_range", "en", min=0, max=Decimal("20.00"))

    assert text == "The score must be between 0 and 20."


def test_translate_returns_unknown_ids_unchanged():
    assert translate("no.such.message", "fr") == "no.such.message"


def test_translate_returns_template_when_a_parameter_is_missing():
    assert translate("not_found.task", "en") == "No task has id {id}."


def problem_request() -> Request:
    return Request(
        {"type": "http", "method": "POST", "scheme": "http", "server": ("api.test", 80), "path": "/students",
         "query_string": b"", "headers": [(b"accept-language", b"en")]}
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),
        (10**5000, "1" + "0" * 99 + "…"),
        (-(10**200), "-" + "1" + "0" * 98 + "…"),
        (Decimal("1E+5000"), "1E+5000"),
        (12, 12),
        (12.5, 12.5),
        ("texte", "texte"),
    ],
    ids=["nan", "inf", "-inf", "bytes", "huge int", "long negative int", "huge decimal", "int", "float", "str"],
)
def test_problem_renders_any_value(value, rendered):
    response = problem_response(
        problem_request(), 422, kind="validation", detail="Invalid input.", extras={"errors": [{"value": value}]}
    )

    assert json.loads(response.body)["errors"] == [{"value": rendered}]


async def test_database_outage_is_503_with_retry_after(settings):
    import uuid as _uuid

    import httpx

    from dashboard_jobs.api.app import create_app
    from dashboard_jobs.api.auth import mint_token
    from dashboard_jobs.db import create_engine

    unreachable = create_engine("postgresql://postgres@127.0.0.1:1/nowhere", pool_size=1)
    app = create_app(settings, engine=unreachable)
    token = mint_token(settings, _uuid.uuid4(), "admin")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            response = await client.get(
                f"/students/{_uuid.uuid4()}/dashboard", headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        await unreachable.dispose()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    assert "indisponible" in response.json()["detail"]
