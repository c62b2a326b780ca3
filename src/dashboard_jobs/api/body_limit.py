"""A limit on the size of request bodies: a larger body gets a 413 problem.

Without it a client could make the API hold a body of any size in memory before validation
rejects it. The middleware responds at once when Content-Length is over the limit, without
calling the application. A body without Content-Length (chunked) is counted while the
application reads it, and the read stops at the first chunk that crosses the limit.

FastAPI's own ``max_body_size`` (FastAPI 0.165) responds with a plain-text 413, not with a
problem in the client's language, which is why the API has its own middleware.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard_jobs.api.problems import problem_response, request_language, translate


class RequestBodyTooLarge(StarletteHTTPException):
    """The body grew past ``max_bytes`` while it was read.

    An HTTPException, because FastAPI passes those on unchanged from a body read, and turns
    any other exception there into a 400.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413)
        self.max_bytes = max_bytes


def body_too_large_response(request: Request, max_bytes: int) -> JSONResponse:
    detail = translate("body.too_large", request_language(request), max_bytes=max_bytes)
    return problem_response(request, 413, kind="body-too-large", detail=detail)


async def handle_body_too_large(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestBodyTooLarge):
        raise TypeError(f"expected RequestBodyTooLarge, got {type(error).__name__}")
    return body_too_large_response(request, error.max_bytes)


class RequestBodyLimitMiddleware:
    """Middleware that rejects with 413 a request whose body is, or grows, larger than ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared_length = _content_length(scope)
        if declared_length is not None and declared_length > self.max_body_bytes:
            response = body_too_large_response(Request(scope), self.max_body_bytes)
            await response(scope, receive, send)
            return

        received_bytes = 0

        async def receive_within_limit() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_body_bytes:
                    # Raised inside the application's body read, so its exception handler
                    # sends the 413 and no further chunk is read.
                    raise RequestBodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, receive_within_limit, send)


def install_body_limit(app: FastAPI, max_body_bytes: int) -> None:
    app.add_exception_handler(RequestBodyTooLarge, handle_body_too_large)
    app.add_middleware(RequestBodyLimitMiddleware, max_body_bytes=max_body_bytes)


def _content_length(scope: Scope) -> int | None:
    # A malformed value is left to the server, and the streamed count still applies.
    try:
        return int(Headers(scope=scope)["content-length"])
    except (KeyError, ValueError):
        return None
