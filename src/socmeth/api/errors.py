"""Answer every refused request with one JSON shape.

    {"error": {"status": 422, "message": "...",
               "fields": [{"field": "schedule", "message": "..."}]}}

The mapping follows the error tree of `socmeth.errors`: ValidationError 422,
NotFoundError 404, ConflictError 409, LimitError 413, StoreError 503; and of
`socmeth.auth.errors`: ForbiddenError 403, RateLimitedError 429 (with Retry-After),
any other AuthError 401 (with WWW-Authenticate). FastAPI's own
request validation becomes the same 422 (or 400 when the body is not JSON at all), and
unknown paths and methods keep their 404 and 405 in this shape too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from socmeth import ui
from socmeth.api.schemas import ErrorBody, error_body, field_errors
from socmeth.auth.errors import AuthError, ForbiddenError, RateLimitedError
from socmeth.errors import (
    ConflictError,
    FieldError,
    LimitError,
    NotFoundError,
    SocmethError,
    StoreError,
    ValidationError,
)

log = logging.getLogger(__name__)

# The schemes a 401 offers (RFC 9110 11.6.1): one challenge each.
CHALLENGE = 'Bearer realm="socmeth", Basic realm="socmeth", charset="UTF-8"'

# Documented on every route, so that clients generated from the OpenAPI document know
# the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "The body is not valid JSON."),
        (401, "No credentials, or credentials that are refused."),
        (403, "The caller's role does not include this."),
        (404, "No such job, run or attempt."),
        (409, "The request clashes with stored state."),
        (413, "The body or a count is over a limit."),
        (422, "A field is invalid; each bad field is named."),
        (503, "The store does not answer; retry."),
    )
}

_MESSAGES = {
    400: "the request is malformed",
    404: "not found",
    405: "method not allowed",
    413: "the request is too large",
    422: "the request has invalid fields",
}


def error_response(
    status: int, message: str, fields: Iterable[FieldError] = ()
) -> JSONResponse:
    """Build an error response in the API's one shape."""
    return JSONResponse(error_body(status, message, fields), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into error responses."""
    app.add_exception_handler(SocmethError, _handle_socmeth_error)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)


async def _handle_socmeth_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AuthError):
        if not request.url.path.startswith("/api") and ui.wants_page(request):
            return ui.session.auth_refusal(request, exc)
        return _auth_refusal(exc)
    if isinstance(exc, ValidationError):
        return error_response(422, _summary(exc.errors), exc.errors)
    if isinstance(exc, NotFoundError):
        return error_response(404, str(exc))
    if isinstance(exc, ConflictError | LimitError):
        status = 409 if isinstance(exc, ConflictError) else 413
        fields = [FieldError(exc.field, str(exc))] if exc.field else []
        return error_response(status, str(exc), fields)
    if isinstance(exc, StoreError):
        log.warning(
            "the store failed while serving %s %s: %s",
            request.method,
            request.url.path,
            exc,
            extra={"event": "api.store_failed"},
        )
        return error_response(503, f"the store is unavailable: {exc}; retry shortly")
    return await _handle_unexpected(request, exc)


def _auth_refusal(exc: AuthError) -> JSONResponse:
    """Answer a refused caller: 403 for a role below the route's, 429 after too
    many failed logins, 401 (naming the schemes taken) for missing or bad
    credentials."""
    if isinstance(exc, ForbiddenError):
        return error_response(403, str(exc))
    if isinstance(exc, RateLimitedError):
        response = error_response(429, str(exc))
        seconds = max(1, math.ceil(exc.retry_after.total_seconds()))
        response.headers["Retry-After"] = str(seconds)
        return response
    response = error_response(401, str(exc))
    response.headers["WWW-Authenticate"] = CHALLENGE
    return response


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unexpected %s while serving %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"event": "api.internal_error"},
    )
    return error_response(500, "socmeth failed to handle the request; see its logs")


async def _handle_request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    invalid_json = [e for e in errors if e["type"] == "json_invalid"]
    if invalid_json:
        return error_response(400, _json_problem(invalid_json[0]))

    body_errors = [e for e in errors if tuple(e["loc"]) == ("body",)]
    if body_errors:
        return error_response(422, _body_problem(body_errors[0]))

    # The first element of a location says where the field was (body, query, path);
    # clients know fields by their JSON or parameter names alone.
    fields = field_errors([{**e, "loc": tuple(e["loc"])[1:]} for e in errors])
    return error_response(422, _summary(fields), fields)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status in (404, 405) and ui.wants_page(request):
        message = (
            "There is no such page"
            if status == 404
            else (f"{request.url.path} does not take {request.method}")
        )
        return ui.pages.error_page(request, status, message, back=("/", "Dashboard"))
    if status == 404:
        message = (
            f"{request.method} {request.url.path} matches no endpoint; "
            "the API is described at /docs"
        )
    elif status == 405:
        message = f"{request.url.path} does not take {request.method}"
    else:
        message = str(exc.detail) or _MESSAGES.get(status, "the request failed")
    response = error_response(status, message)
    response.headers.update(exc.headers or {})
    return response


def _summary(fields: list[FieldError]) -> str:
    if len(fields) == 1:
        return f"{fields[0].field}: {fields[0].message}"
    names = list(dict.fromkeys(f.field for f in fields))
    if not names:
        return _MESSAGES[422]
    return f"{len(names)} fields are invalid: {', '.join(names)}"


def _json_problem(error: dict[str, Any]) -> str:
    reason = error.get("ctx", {}).get("error", "not JSON")
    position = tuple(error["loc"])[1:]
    where = f" at position {position[0]}" if position else ""
    return f"the request body is not valid JSON ({reason}{where})"


def _body_problem(error: dict[str, Any]) -> str:
    if error["type"] == "missing":
        return "the request needs a JSON object as its body"
    return (
        "the request body must be a JSON object sent with "
        "Content-Type: application/json"
    )
