"""Error responses as RFC 9457 problem details, in French or English.

This module is the one place where domain errors, authentication failures, request
validation errors, HTTP errors and unexpected exceptions become HTTP responses. Every
response has the media type ``application/problem+json`` and the members ``type``,
``title``, ``status``, ``detail`` and ``instance``. Validation problems add ``errors``, one
item per rejected field. Internal errors add ``error_id``, which is also logged.

Messages are French unless the Accept-Language header prefers English.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard_jobs.api.auth import AuthenticationFailed
from dashboard_jobs.consumers.failures import FailureKind, classify, describe_error
from dashboard_jobs.domain.errors import Conflict, DomainError, FieldError, Forbidden, InvalidInput, NotFound

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:dashboard-jobs:problem:"

DEFAULT_LANGUAGE = "fr"
SUPPORTED_LANGUAGES = ("fr", "en")

# Longer string values are cut before they are echoed back in a validation problem, and
# numbers with more digits are echoed as cut text.
MAX_ECHOED_VALUE_LENGTH = 100
MAX_ECHOED_INTEGER = 10**MAX_ECHOED_VALUE_LENGTH

# Message ids to their French and English text, filled in with str.format.
MESSAGES: dict[str, dict[str, str]] = {
    "title.400": {"fr": "Requête incorrecte", "en": "Bad request"},
    "title.401": {"fr": "Authentification requise", "en": "Authentication required"},
    "title.403": {"fr": "Accès refusé", "en": "Forbidden"},
    "title.404": {"fr": "Ressource introuvable", "en": "Not found"},
    "title.405": {"fr": "Méthode non autorisée", "en": "Method not allowed"},
    "title.409": {"fr": "Conflit", "en": "Conflict"},
    "title.413": {"fr": "Contenu trop volumineux", "en": "Content too large"},
    "title.415": {"fr": "Type de contenu non pris en charge", "en": "Unsupported media type"},
    "title.422": {"fr": "Données invalides", "en": "Invalid input"},
    "title.500": {"fr": "Erreur interne", "en": "Internal server error"},
    "title.503": {"fr": "Service indisponible", "en": "Service unavailable"},
    # FastAPI returns 400 when it cannot decode the body, such as invalid UTF-8 or JSON nested
    # deeper than the parser's recursion limit.
    "http.400": {
        "fr": "Le corps de la requête est illisible. Envoyez un JSON valide, encodé en UTF-8, "
        "sans imbrication excessive.",
        "en": "The request body cannot be read. Send valid JSON, encoded in UTF-8, without excessive nesting.",
    },
    "http.404": {
        "fr": "Aucune ressource ne correspond à cette adresse.",
        "en": "No resource matches this URL.",
    },
    "http.405": {
        "fr": "Cette adresse n'accepte pas cette méthode HTTP.",
        "en": "This URL does not accept this HTTP method.",
    },
    "auth.missing": {
        "fr": "Authentification requise. Envoyez un jeton dans l'en-tête « Authorization: Bearer <jeton> ».",
        "en": "Authentication required. Send a token in the 'Authorization: Bearer <token>' header.",
    },
    "auth.invalid": {
        "fr": "Le jeton d'authentification est invalide.",
        "en": "The authentication token is invalid.",
    },
    "auth.expired": {
        "fr": "Le jeton d'authentification a expiré. Demandez-en un nouveau.",
        "en": "The authentication token has expired. Request a new one.",
    },
    "forbidden.student_access": {
        "fr": "Votre compte n'a pas accès à cet élève.",
        "en": "Your account has no access to this student.",
    },
    "forbidden.task_access": {
        "fr": "Votre compte n'a pas accès à cette tâche.",
        "en": "Your account has no access to this task.",
    },
    "forbidden.session_access": {
        "fr": "Votre compte n'a pas accès à cette séance.",
        "en": "Your account has no access to this tutoring session.",
    },
    "forbidden.read_only_role": {
        "fr": "Un compte parent peut consulter les données mais pas les modifier.",
        "en": "A parent account can read data but not change it.",
    },
    "not_found.student": {"fr": "Aucun élève n'a l'identifiant {id}.", "en": "No student has id {id}."},
    "not_found.task": {"fr": "Aucune tâche n'a l'identifiant {id}.", "en": "No task has id {id}."},
    "not_found.session": {
        "fr": "Aucune séance n'a l'identifiant {id}.",
        "en": "No tutoring session has id {id}.",
    },
    "body.too_large": {
        "fr": "Le corps de la requête dépasse la taille maximale de {max_bytes} octets. Envoyez un corps plus petit.",
        "en": "The request body is larger than the maximum of {max_bytes} bytes. Send a smaller body.",
    },
    "body.not_json": {
        "fr": "Le corps de la requête doit être du JSON. Envoyez l'en-tête « Content-Type: application/json ».",
        "en": "The request body must be JSON. Send the 'Content-Type: application/json' header.",
    },
    "conflict.task.already_completed": {
        "fr": "Cette tâche est déjà terminée.",
        "en": "This task is already completed.",
    },
    "unavailable": {
        "fr": "Le service est momentanément indisponible (base de données injoignable). Réessayez dans quelques secondes.",
        "en": "The service is temporarily unavailable (the database cannot be reached). Try again in a few seconds.",
    },
    "internal": {
        "fr": "Une erreur interne est survenue. Si elle se répète, transmettez l'identifiant {error_id} "
        "à l'équipe technique.",
        "en": "An internal error occurred. If it happens again, give the id {error_id} to the technical team.",
    },
    "unavailable.database": {
        "fr": "La base de données ne répond pas. Réessayez dans quelques instants.",
        "en": "The database does not respond. Try again in a moment.",
    },
    "dashboard.refreshing": {
        "fr": "Une modification récente n'est pas encore prise en compte ; le résumé sera à jour dans quelques secondes.",
        "en": "A recent change is not reflected yet; the summary will be up to date in a few seconds.",
    },
    "dashboard.pending": {
        "fr": "Le tableau de bord de cet élève est en cours de préparation. Réessayez dans quelques secondes.",
        "en": "This student's dashboard is being prepared. Try again in a few seconds.",
    },
    # Validation problems: the frame, then one message per domain rule or pydantic error type.
    "validation.one": {
        "fr": "Valeur invalide pour « {field} » : {value}. {message}",
        "en": "Invalid value for '{field}': {value}. {message}",
    },
    "validation.one_without_value": {
        "fr": "Champ « {field} » invalide. {message}",
        "en": "Invalid field '{field}'. {message}",
    },
    "validation.many": {
        "fr": "Champs invalides : {fields}. Le membre errors détaille chacun d'eux.",
        "en": "Invalid fields: {fields}. The errors member describes each of them.",
    },
    "subject.unknown": {
        "fr": "Cette matière n'existe pas. Matières acceptées : {allowed}.",
        "en": "This subject does not exist. Accepted subjects: {allowed}.",
    },
    "title.blank": {"fr": "Le titre est vide.", "en": "The title is empty."},
    "title.too_long": {
        "fr": "Le titre dépasse {max} caractères.",
        "en": "The title is longer than {max} characters.",
    },
    "string.nul_character": {
        "fr": "Le texte contient le caractère NUL (U+0000), qui ne peut pas être enregistré. Retirez-le.",
        "en": "The text contains the NUL character (U+0000), which cannot be stored. Remove it.",
    },
    "datetime.naive": {
        "fr": "La date n'a pas de fuseau horaire. Ajoutez un décalage, par exemple 2026-03-02T17:00:00+01:00.",
        "en": "The date has no time zone. Add an offset, for example 2026-03-02T17:00:00+01:00.",
    },
    "datetime.out_of_range": {
        "fr": "L'année de la date doit être comprise entre {min} et {max}.",
        "en": "The date's year must be between {min} and {max}.",
    },
    "datetime.future": {
        "fr": "Une évaluation ne peut pas être datée dans le futur. Indiquez une date passée, "
        "ou omettez evaluated_at pour la dater de maintenant.",
        "en": "An evaluation cannot be dated in the future. Give a past date, or omit evaluated_at to date it now.",
    },
    "choice.unknown": {
        "fr": "Cette valeur n'est pas acceptée. Valeurs acceptées : {allowed}.",
        "en": "This value is not accepted. Accepted values: {allowed}.",
    },
    "score.out_of_range": {
        "fr": "La note doit être comprise entre {min} et {max}.",
        "en": "The score must be between {min} and {max}.",
    },
    "max_score.out_of_range": {
        "fr": "Le barème doit être supérieur à 0 et au plus égal à {max}.",
        "en": "The maximum score must be greater than 0 and at most {max}.",
    },
    "number.too_many_decimals": {
        "fr": "Le nombre a plus de {places} décimales.",
        "en": "The number has more than {places} decimal places.",
    },
    "number.not_finite": {"fr": "Un nombre fini est attendu.", "en": "A finite number is expected."},
    "duration.out_of_range": {
        "fr": "La durée doit être comprise entre {min} et {max} minutes.",
        "en": "The duration must be between {min} and {max} minutes.",
    },
    "coach_id.required": {
        "fr": "Un administrateur doit indiquer coach_id, le coach qui anime la séance.",
        "en": "An admin must give coach_id, the coach who leads the session.",
    },
    "coach_id.not_self": {
        "fr": "Un coach n'enregistre que ses propres séances. Omettez coach_id ou indiquez votre identifiant.",
        "en": "A coach logs only their own sessions. Omit coach_id or give your own account id.",
    },
    "coach_id.not_a_coach": {"fr": "Ce compte n'est pas un coach.", "en": "This account is not a coach."},
    "missing": {"fr": "Ce champ est obligatoire.", "en": "This field is required."},
    "null_not_allowed": {
        "fr": "Ce champ peut être omis mais ne peut pas valoir null.",
        "en": "This field may be omitted but cannot be null.",
    },
    "update_empty": {
        "fr": "Indiquez au moins un champ à modifier parmi : {fields}.",
        "en": "Give at least one field to change among: {fields}.",
    },
    "extra_forbidden": {"fr": "Ce champ n'existe pas.", "en": "This field does not exist."},
    "json_invalid": {
        "fr": "Le corps de la requête n'est pas un JSON valide.",
        "en": "The request body is not valid JSON.",
    },
    "expected.string": {"fr": "Une chaîne de caractères est attendue.", "en": "A string is expected."},
    "expected.integer": {"fr": "Un nombre entier est attendu.", "en": "An integer is expected."},
    "expected.number": {"fr": "Un nombre est attendu.", "en": "A number is expected."},
    "expected.boolean": {"fr": "Un booléen est attendu.", "en": "A boolean is expected."},
    "expected.datetime": {
        "fr": "Une date et heure ISO 8601 est attendue, par exemple 2026-03-02T17:00:00+01:00.",
        "en": "An ISO 8601 date and time is expected, for example 2026-03-02T17:00:00+01:00.",
    },
    "expected.uuid": {"fr": "Un identifiant UUID est attendu.", "en": "A UUID is expected."},
    "expected.object": {"fr": "Un objet JSON est attendu.", "en": "A JSON object is expected."},
    "validation.other": {"fr": "Valeur invalide ({reason}).", "en": "Invalid value ({reason})."},
    # Parent reports and the bulk endpoint.
    "period.invalid": {
        "fr": "Format attendu YYYY-MM avec un mois de 01 à 12, par exemple 2025-01.",
        "en": "Expected the form YYYY-MM with a month from 01 to 12, for example 2025-01.",
    },
    "period.too_old": {
        "fr": "Cette période est antérieure à 2000 ; choisissez un mois à partir de 2000-01.",
        "en": "This period is before 2000; choose a month from 2000-01 on.",
    },
    "period.future": {
        "fr": "Cette période est postérieure au mois en cours ; choisissez ce mois-ci ou un mois passé.",
        "en": "This period is after the current month; choose this month or an earlier one.",
    },
    "student_ids.too_many": {
        "fr": "Une demande porte sur {max} élèves au plus ; découpez-la en plusieurs demandes.",
        "en": "A request covers at most {max} students; split it into several requests.",
    },
    "student_ids.empty": {
        "fr": "Listez au moins un élève, ou omettez student_ids (administrateurs seulement) pour tous les élèves.",
        "en": "List at least one student, or omit student_ids (admins only) for every student.",
    },
    "wait.out_of_range": {
        "fr": "L'attente doit être comprise entre 0 et {max} secondes.",
        "en": "The wait must be between 0 and {max} seconds.",
    },
    "forbidden.all_students_admin_only": {
        "fr": "Seul un administrateur peut demander les rapports de tous les élèves ; listez vos élèves dans student_ids.",
        "en": "Only an admin can request every student's report; list your students in student_ids.",
    },
    "forbidden.report_batch_access": {
        "fr": "Ce lot de rapports n'est consultable que par la personne qui l'a demandé.",
        "en": "Only the account that requested this report batch can read it.",
    },
    "not_found.report": {
        "fr": "Aucun rapport n'a encore été généré pour cet élève sur cette période.",
        "en": "No report has been generated yet for this student and period.",
    },
    "not_found.report_batch": {
        "fr": "Aucun lot de rapports n'a l'identifiant {id}.",
        "en": "No report batch has id {id}.",
    },
    # Dead-letter operations (admins only).
    "forbidden.admin_only": {
        "fr": "Cette opération est réservée aux administrateurs.",
        "en": "Only admins can perform this operation.",
    },
    "dead_letters.queue_unknown": {
        "fr": "Aucune file de consommateur ne porte ce nom. Files connues : {known}.",
        "en": "No consumer queue has this name. Known queues: {known}.",
    },
    "dead_letters.purge_unconfirmed": {
        "fr": "La purge supprime les messages définitivement ; envoyez confirm: true pour la lancer.",
        "en": "Purging deletes the messages for good; send confirm: true to run it.",
    },
    "unavailable.broker": {
        "fr": "RabbitMQ ne répond pas. Réessayez dans quelques instants.",
        "en": "RabbitMQ does not respond. Try again in a moment.",
    },
}

# Pydantic error types to the message ids above; other types use validation.other.
PYDANTIC_MESSAGE_IDS: dict[str, str] = {
    "missing": "missing",
    "null_not_allowed": "null_not_allowed",
    "update_empty": "update_empty",
    "extra_forbidden": "extra_forbidden",
    "json_invalid": "json_invalid",
    "string_type": "expected.string",
    "string_unicode": "expected.string",
    "string_nul_character": "string.nul_character",
    "int_type": "expected.integer",
    "int_parsing": "expected.integer",
    "int_from_float": "expected.integer",
    "float_type": "expected.number",
    "float_parsing": "expected.number",
    "decimal_type": "expected.number",
    "decimal_parsing": "expected.number",
    "finite_number": "number.not_finite",
    "bool_type": "expected.boolean",
    "bool_parsing": "expected.boolean",
    "datetime_type": "expected.datetime",
    "datetime_parsing": "expected.datetime",
    "datetime_from_date_parsing": "expected.datetime",
    "datetime_object_invalid": "expected.datetime",
    "datetime_out_of_range": "datetime.out_of_range",
    "datetime_in_future": "datetime.future",
    "uuid_type": "expected.uuid",
    "uuid_parsing": "expected.uuid",
    "uuid_version": "expected.uuid",
    "model_type": "expected.object",
    "model_attributes_type": "expected.object",
    "dict_type": "expected.object",
}


# Language negotiation and messages


def negotiate_language(accept_language: str | None) -> str:
    """Return the supported language the Accept-Language header prefers, French by default.

    Follows RFC 9110 section 12.5.4. Each range has a quality (q, default 1, and 0 means
    "not acceptable"), ``*`` is any language not listed, and among equal qualities the range
    listed first wins. A range matches by its primary subtag, so ``en-GB`` selects
    English. Ranges with a malformed quality are ignored.
    """
    if not accept_language:
        return DEFAULT_LANGUAGE

    explicit: dict[str, tuple[float, int]] = {}
    wildcard: tuple[float, int] | None = None
    for position, item in enumerate(accept_language.split(",")):
        language_range, *parameters = (part.strip() for part in item.split(";"))
        quality = _parse_quality(parameters)
        if not language_range or quality is None:
            continue
        primary = language_range.split("-")[0].lower()
        if primary == "*":
            wildcard = wildcard or (quality, position)
        elif primary in SUPPORTED_LANGUAGES and primary not in explicit:
            explicit[primary] = (quality, position)

    best_language, best_rank = DEFAULT_LANGUAGE, (0.0, 0)
    for language in SUPPORTED_LANGUAGES:
        quality, position = explicit.get(language) or wildcard or (0.0, 0)
        rank = (quality, -position)
        if quality > 0 and rank > best_rank:
            best_language, best_rank = language, rank
    return best_language


def _parse_quality(parameters: Sequence[str]) -> float | None:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            quality = float(value.strip())
        except ValueError:
            return None
        return quality if 0.0 <= quality <= 1.0 else None
    return 1.0


def translate(message_id: str, language: str, **params: Any) -> str:
    """Return the message in ``language``, filled in with ``params``.

    An unknown id or a missing parameter is logged, and the id or the unfilled template is
    returned, so a catalogue mistake never turns an error response into a crash.
    """
    texts = MESSAGES.get(message_id)
    if texts is None:
        log.error("no message for this id", extra={"message_id": message_id})
        return message_id
    template = texts.get(language) or texts[DEFAULT_LANGUAGE]
    try:
        return template.format(**{name: _format_param(value) for name, value in params.items()})
    except (KeyError, IndexError) as error:
        log.error("message parameter missing", extra={"message_id": message_id, "parameter": str(error)})
        return template


def _format_param(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(_format_param(item) for item in value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def request_language(request: Request) -> str:
    return negotiate_language(request.headers.get("accept-language"))


# Responses


def problem_response(
    request: Request,
    status: int,
    *,
    kind: str | None,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Build a problem response. ``kind`` names the problem type, and None means about:blank."""
    language = request_language(request)
    title_id = f"title.{status}"
    title = translate(title_id, language) if title_id in MESSAGES else HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update(extras or {})
    response_headers = {"Content-Language": language, "Vary": "Accept-Language", **(headers or {})}
    return JSONResponse(
        _json_compatible(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=response_headers
    )


async def handle_domain_error(request: Request, error: Exception) -> JSONResponse:
    language = request_language(request)
    match error:
        case InvalidInput():
            return _validation_problem(request, [_domain_error_item(item, language) for item in error.errors])
        case Forbidden():
            # The message depends only on the reason, never on whether the student or row exists.
            detail = translate(f"forbidden.{error.reason}", language)
            return problem_response(request, 403, kind="forbidden", detail=detail)
        case NotFound():
            detail = translate(f"not_found.{error.resource}", language, id=error.resource_id)
            return problem_response(request, 404, kind="not-found", detail=detail)
        case Conflict():
            detail = translate(f"conflict.{error.code}", language, **error.params)
            return problem_response(request, 409, kind="conflict", detail=detail)
        case _:
            log.error("domain error without an HTTP mapping", exc_info=error)
            return problem_response(request, 400, kind="domain-error", detail=str(error))


async def handle_authentication_failed(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, AuthenticationFailed):
        raise TypeError(f"expected AuthenticationFailed, got {type(error).__name__}")
    # As RFC 6750 section 3 specifies, a request without credentials gets the bare challenge and a
    # rejected token gets error="invalid_token".
    challenge = "Bearer" if error.code == "auth.missing" else 'Bearer error="invalid_token"'
    return problem_response(
        request,
        401,
        kind="unauthenticated",
        detail=translate(error.code, request_language(request)),
        headers={"WWW-Authenticate": challenge},
    )


async def handle_request_validation_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestValidationError):
        raise TypeError(f"expected RequestValidationError, got {type(error).__name__}")
    language = request_language(request)
    # FastAPI decodes a body as JSON only when Content-Type is a JSON type, and otherwise validates
    # the raw bytes, which pydantic rejects as "object expected" without saying what to fix.
    if isinstance(error.body, bytes):
        return problem_response(
            request, 415, kind="unsupported-media-type", detail=translate("body.not_json", language)
        )
    return _validation_problem(request, [_pydantic_error_item(item, language) for item in error.errors()])


async def handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):
        raise TypeError(f"expected HTTPException, got {type(error).__name__}")
    message_id = f"http.{error.status_code}"
    detail = translate(message_id, request_language(request)) if message_id in MESSAGES else str(error.detail)
    return problem_response(request, error.status_code, kind=None, detail=detail, headers=error.headers)


def internal_error_response(request: Request, error_id: uuid.UUID) -> JSONResponse:
    detail = translate("internal", request_language(request), error_id=error_id)
    return problem_response(request, 500, kind="internal", detail=detail, extras={"error_id": str(error_id)})


# Retry-After value, in seconds, of a 503 caused by a database outage.
RETRY_AFTER_SECONDS = 5


def unavailable_response(request: Request) -> JSONResponse:
    detail = translate("unavailable", request_language(request))
    return problem_response(
        request, 503, kind="unavailable", detail=detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


class UnhandledErrorMiddleware:
    """Turn an exception no handler took into a logged 500 problem.

    A plain ASGI middleware rather than an ``Exception`` handler, because Starlette re-raises
    after running such a handler, which logs every failure twice.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def send_and_track(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except Exception as error:
            if classify(error) is FailureKind.TRANSIENT and not response_started:
                # The database is down, restarting or timed out: the client can retry.
                log.warning(
                    "request failed on a transient error, responded 503",
                    extra={"method": scope["method"], "path": scope["path"], "error": describe_error(error)},
                )
                response = unavailable_response(Request(scope))
                await response(scope, receive, send)
                return
            error_id = uuid.uuid4()
            log.exception(
                "request failed",
                extra={"error_id": str(error_id), "method": scope["method"], "path": scope["path"]},
            )
            if response_started:
                raise
            response = internal_error_response(Request(scope), error_id)
            await response(scope, receive, send)


@contextmanager
def student_access_reworded(resource: str) -> Iterator[None]:
    """Reword a refused student access as a refused access to ``resource``, a task or a session.

    A route that changes a row by its id names no student, so its refusal names the row.
    The reason is the same whether the row belongs to another coach's student or does not
    exist, so the response does not tell a coach which ids exist.
    """
    try:
        yield
    except Forbidden as error:
        if error.reason != "student_access":
            raise
        raise Forbidden(f"{resource}_access") from None


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, handle_domain_error)
    app.add_exception_handler(AuthenticationFailed, handle_authentication_failed)
    app.add_exception_handler(RequestValidationError, handle_request_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_middleware(UnhandledErrorMiddleware)


# Validation problems


def _validation_problem(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    language = request_language(request)
    if len(items) == 1:
        item = items[0]
        if "value" in item:
            detail = translate(
                "validation.one", language, field=item["field"], value=_display(item["value"]), message=item["message"]
            )
        else:
            detail = translate("validation.one_without_value", language, field=item["field"], message=item["message"])
    else:
        fields = sorted({item["field"] for item in items})
        detail = translate("validation.many", language, fields=fields)
    return problem_response(request, 422, kind="validation", detail=detail, extras={"errors": items})


def _domain_error_item(error: FieldError, language: str) -> dict[str, Any]:
    return {
        "field": error.field,
        "location": "body",
        "code": error.code,
        "value": _echoed_value(error.value),
        "message": translate(error.code, language, **error.params),
    }


def _pydantic_error_item(error: Mapping[str, Any], language: str) -> dict[str, Any]:
    location, *path = error.get("loc") or ("body",)
    error_type = error.get("type", "value_error")
    # A JSON syntax error's location ends with a character offset, not a field name.
    field = "body" if error_type == "json_invalid" else ".".join(str(part) for part in path) or str(location)
    message_id = PYDANTIC_MESSAGE_IDS.get(error_type, "validation.other")
    params = {"reason": error.get("msg", error_type), **(error.get("ctx") or {})}
    item: dict[str, Any] = {
        "field": field,
        "location": str(location),
        "code": error_type,
        "message": translate(message_id, language, **params),
    }
    # A missing field has no value, and pydantic reports the enclosing object as its input.
    if error_type not in {"missing", "json_invalid", "update_empty"}:
        item["value"] = _echoed_value(error.get("input"))
    return item


def _echoed_value(value: Any) -> Any:
    """Return a JSON-compatible copy of a rejected scalar, cut to a readable length."""
    if isinstance(value, (Mapping, list, tuple, set)):
        return None
    if isinstance(value, (str, bytes)):
        return _cut(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    if isinstance(value, Decimal):
        # Beyond this magnitude jsonable_encoder makes an integer too long to print, or an
        # infinite float. str() keeps the exponent notation, such as 1E+5000.
        if value.is_finite() and value.adjusted() < MAX_ECHOED_VALUE_LENGTH:
            return jsonable_encoder(value)
        return _cut(str(value))
    if isinstance(value, (bool, int, float, datetime, date, uuid.UUID, Enum)) or value is None:
        return _json_compatible(jsonable_encoder(value))
    return _json_compatible(value)


def _json_compatible(value: Any) -> Any:
    """Return ``value`` with everything JSON cannot encode replaced by text.

    json.dumps rejects NaN and infinity in a response, and Python refuses to print an integer
    of more than 4300 digits (sys.get_int_max_str_digits), so echoing such an input would
    turn the problem response itself into a 500.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Decimal prints an integer of any length.
        return value if abs(value) < MAX_ECHOED_INTEGER else _cut(str(Decimal(value)))
    if isinstance(value, float):
        # The names JSON parsers such as Python's accept: NaN, Infinity and -Infinity.
        return value if math.isfinite(value) else json.dumps(value)
    if isinstance(value, Mapping):
        return {str(key): _json_compatible(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_compatible(item) for item in value]
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", "replace"))
    return _cut(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ECHOED_VALUE_LENGTH else text[:MAX_ECHOED_VALUE_LENGTH] + "…"


def _display(value: Any) -> str:
    return json.dumps(_json_compatible(value), ensure_ascii=False)
