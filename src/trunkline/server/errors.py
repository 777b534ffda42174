"""Errors in the shapes the OpenAI and Anthropic SDKs expect, with the status codes they map.

The OpenAI SDK reads ``{"error": {"message", "type", "param", "code"}}``;
the Anthropic SDK reads ``{"type": "error", "error": {"type", "message"}}``.
Both pick their exception class by status code, so the status matters more
than the body: 401 authentication, 403 permission, 404 not found, 422
unprocessable, 429 rate limit (with ``Retry-After``), 5xx server errors.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from trunkline.errors import (
    AllDeploymentsFailed,
    BudgetExceeded,
    CallError,
    ConfigError,
    ErrorKind,
    ProviderError,
)
from trunkline.server.auth import AuthFailure


class ApiError(Exception):
    """An error answer: status, a machine code, a message, and the wait a 429 asks for."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s


# Per kind: the status a client sees, and the code in the body. The
# gateway's own upstream credentials failing is its operator's fault, not
# the client's, so auth and not_found from a provider answer 502.
_KIND_STATUS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.RATE_LIMITED: (429, "rate_limit_exceeded"),
    ErrorKind.QUOTA_EXCEEDED: (429, "insufficient_quota"),
    ErrorKind.BUDGET_EXCEEDED: (429, "budget_exceeded"),
    ErrorKind.OVERLOADED: (503, "overloaded"),
    ErrorKind.SERVER_ERROR: (502, "upstream_error"),
    ErrorKind.CONNECTION: (502, "upstream_unreachable"),
    ErrorKind.TIMEOUT: (504, "upstream_timeout"),
    ErrorKind.BAD_REQUEST: (400, "invalid_request"),
    ErrorKind.CONTEXT_LENGTH: (400, "context_length_exceeded"),
    ErrorKind.CONTENT_FILTER: (400, "content_filter"),
    ErrorKind.AUTH: (502, "upstream_auth_failed"),
    ErrorKind.NOT_FOUND: (502, "upstream_model_not_found"),
    ErrorKind.INVALID_OUTPUT: (502, "invalid_output"),
    ErrorKind.EMPTY_OUTPUT: (502, "empty_output"),
    ErrorKind.OUTPUT_TRUNCATED: (502, "output_truncated"),
    ErrorKind.INVALID_TOOL_ARGUMENTS: (502, "invalid_tool_arguments"),
    ErrorKind.CANCELLED: (503, "cancelled"),
    ErrorKind.CONFIGURATION: (500, "gateway_configuration"),
}


def from_call_error(error: CallError) -> ApiError:
    """Translate a failed call into the answer a client sees."""
    status, code = _KIND_STATUS.get(error.kind, (502, "upstream_error"))
    retry_after = None
    if error.kind is ErrorKind.BUDGET_EXCEEDED:
        budget = _budget_cause(error)
        if budget is not None and budget.scope.startswith("key:"):
            # A key's budget is per UTC day, so it comes back at midnight.
            now = datetime.now(UTC)
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            retry_after = (midnight - now).total_seconds()
    elif status in (429, 503):
        retry_after = _retry_after(error)
    return ApiError(status, code, str(error), retry_after_s=retry_after)


def _budget_cause(error: CallError) -> BudgetExceeded | None:
    """Return the budget a call crossed, also when it did so after falling back from a deployment."""
    if isinstance(error, BudgetExceeded):
        return error
    if isinstance(error, AllDeploymentsFailed):
        budgets = [cause for cause in error.causes if isinstance(cause, BudgetExceeded)]
        return budgets[-1] if budgets else None
    return None


def _retry_after(error: CallError) -> float | None:
    if isinstance(error, ProviderError):
        return error.retry_after_s
    if isinstance(error, AllDeploymentsFailed):
        waits = [cause.retry_after_s for cause in error.causes if isinstance(cause, ProviderError)]
        known = [wait for wait in waits if wait is not None]
        return min(known) if known else None
    return None


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def openai_body(error: ApiError) -> dict:
    kind = _OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}


def anthropic_body(error: ApiError) -> dict:
    kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def is_anthropic(request: Request) -> bool:
    return request.url.path.startswith("/v1/messages")


def is_page(request: Request) -> bool:
    """Dashboard pages answer a missing sign-in with a redirect instead of JSON."""
    path = request.url.path
    return not path.startswith(("/v1/", "/admin/", "/api/", "/metrics", "/healthz"))


def error_response(request: Request, error: ApiError) -> Response:
    body = anthropic_body(error) if is_anthropic(request) else openai_body(error)
    headers = {}
    if error.retry_after_s is not None and math.isfinite(error.retry_after_s):
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    return Response(
        json.dumps(body), status_code=error.status, media_type="application/json", headers=headers
    )


async def handle_api_error(request: Request, error: ApiError) -> Response:
    return error_response(request, error)


async def handle_http_error(request: Request, error: StarletteHTTPException) -> Response:
    """Convert Starlette's own errors, such as an unknown path, to the API's error shape."""
    code = _HTTP_CODES.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
    if error.status_code == 404 and error.detail == "Not Found":
        # Starlette's default detail when no route matches the path.
        path = request.url.path
        message = f"no route {request.method} {path}; the OpenAPI schema at /openapi.json lists them"
    response = error_response(request, ApiError(error.status_code, code, message))
    response.headers.update(error.headers or {})
    return response


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def handle_auth_failure(request: Request, error: AuthFailure) -> Response:
    if is_page(request) and error.status == 401:
        # Quoted, so a path holding "&", "?" or "#" comes back whole as one parameter.
        return RedirectResponse(f"/login?next={quote(request.url.path, safe='/')}", status_code=303)
    return error_response(request, ApiError(error.status, error.code, error.message))


async def handle_call_error(request: Request, error: CallError) -> Response:
    return error_response(request, from_call_error(error))


async def handle_config_error(request: Request, error: ConfigError) -> Response:
    # Raised by a request's own content (an unknown route, a bad value), so the client can fix it.
    return error_response(request, ApiError(400, "invalid_request", str(error)))


async def handle_validation_error(request: Request, error: RequestValidationError) -> Response:
    problems = []
    first_param = None
    for item in error.errors():
        if item.get("type") == "json_invalid":
            # FastAPI locates a JSON syntax error at ("body", offset), which names no parameter.
            offset = item.get("loc", ("body", "?"))[-1]
            reason = item.get("ctx", {}).get("error", "invalid JSON")
            problems.append(f"body: the body is not valid JSON ({reason} at character {offset})")
            continue
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        first_param = first_param or location or None
        problems.append(f"{location or 'body'}: {item.get('msg')}")
    message = "the request does not match the API: " + "; ".join(problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more"
    return error_response(request, ApiError(422, "invalid_request", message, param=first_param))
