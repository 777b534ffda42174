"""Errors in the shapes the OpenAI and Anthropic SDKs expect, with the status codes they map.

The OpenAI SDK reads ``{"error": {"message", "type", "param", "code"}}``;
the Anthropic SDK reads ``{"type": "error", "error": {"type", "message"}}``.
Both pick their exception class by status code, so the status matters more
than the body: 401 authentication, 403 permission, 404 not found, 422
unprocessable, 429 rate limit (with ``Retry-After``), 5xx server errors.
Dashboard pages get an HTML page instead for 403 and 404.

Every JSON error response of a gateway endpoint passes through
`error_response`, which counts it in ``trunkline_gateway_requests_total``
unless the gateway counted it already with its call.
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
from trunkline.server.content import LONE_SURROGATE
from trunkline.server.dashboard.rendering import render


class ApiError(Exception):
    """An error response: status, a machine code, a message, and the wait a 429 requests.

    Attributes:
        headers: extra response headers, such as the failed call's
            ``x-trunkline-call-id``.
        counted: whether the gateway already counted this response in its
            metrics, as it does for every request that reached the key's
            limits check.
    """

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
        self.headers: dict[str, str] = {}
        self.counted = False


class BodyTooLarge(StarletteHTTPException):
    """A request body over the gateway's size limit (413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than this gateway's limit of {limit_bytes} bytes; "
            "send a smaller body",
        )


# Per kind: the status the client receives, and the code in the body. The
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
    """Translate a failed call into the error response the client receives."""
    status, code = _KIND_STATUS.get(error.kind, (502, "upstream_error"))
    message = str(error)
    retry_after = None
    if error.kind is ErrorKind.BUDGET_EXCEEDED:
        budget = _budget_cause(error)
        if budget is not None and budget.scope.startswith("key:"):
            # A key's budget is per UTC day, so it comes back at midnight.
            now = datetime.now(UTC)
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            retry_after = (midnight - now).total_seconds()
            message = _key_budget_message(budget)
    elif status in (429, 503):
        retry_after = _retry_after(error)
    return ApiError(status, code, message, retry_after_s=retry_after)


def _key_budget_message(budget: BudgetExceeded) -> str:
    """Explain a spent key budget to its caller, who cannot change the configuration."""
    # The scope reads key:<key id>:<UTC date>, as the gateway names it.
    _, key_id, day = budget.scope.split(":", 2)
    return (
        f"the key {key_id} has used its daily budget of ${budget.limit_usd:g} for {day} (UTC): "
        f"${budget.spent_usd:g} is spent or reserved, and this call may cost up to "
        f"${budget.needed_usd:g}. The budget resets at midnight UTC; lower max_tokens to make "
        f"the call's worst case smaller, or ask an admin to raise the budget with "
        f"`trunkline keys limits {key_id} --budget USD`"
    )


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
    """Return whether `request` is for a dashboard page, which shows errors as HTML."""
    path = request.url.path
    return not path.startswith(("/v1/", "/admin/", "/api/", "/metrics", "/healthz", "/static/"))


#: The gateway endpoints by path, as the ``endpoint`` label of the request metrics names them.
_ENDPOINTS = {
    "/v1/chat/completions": "chat_completions",
    "/v1/messages": "messages",
    "/v1/models": "models",
}


def gateway_endpoint(path: str) -> str | None:
    """Return the metrics name of the gateway endpoint at `path`, or None for other paths."""
    endpoint = _ENDPOINTS.get(path)
    if endpoint is None and path.startswith("/v1/models/"):
        return "models"
    return endpoint


def _count(request: Request, status: int) -> None:
    """Count an error response of a gateway endpoint that no call accounted for."""
    endpoint = gateway_endpoint(request.scope["path"])
    app = request.scope.get("app")
    if endpoint is None or app is None:
        return
    gateway = app.state.gateway
    model = gateway.model_label(getattr(request.state, "model", None))
    gateway.metrics.count(endpoint, model, status)


def error_response(request: Request, error: ApiError) -> Response:
    """Build the response for `error` in the body shape of the request's API, and count it."""
    body = anthropic_body(error) if is_anthropic(request) else openai_body(error)
    headers = dict(error.headers)
    if error.retry_after_s is not None and math.isfinite(error.retry_after_s):
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    if not error.counted:
        _count(request, error.status)
    return Response(
        json.dumps(body), status_code=error.status, media_type="application/json", headers=headers
    )


def error_page(request: Request, status: int, message: str) -> Response:
    """Render a dashboard page's error as HTML, with the navigation of the signed-in key."""
    title = {403: "Permission denied", 404: "Not found"}.get(status, "Error")
    return render(request, "error.html", status=status, title=title, message=message)


async def handle_api_error(request: Request, error: ApiError) -> Response:
    return error_response(request, error)


async def handle_http_error(request: Request, error: StarletteHTTPException) -> Response:
    """Convert Starlette's own errors, such as an unknown path, to the API's error shape."""
    code = _HTTP_CODES.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
    if error.status_code == 404 and error.detail == "Not Found":
        # Starlette's default detail when no route matches the path.
        path = request.url.path
        if is_page(request):
            return error_page(request, 404, f"there is no page at {path}")
        message = f"no route {request.method} {path}; the OpenAPI schema at /openapi.json lists them"
    response = error_response(request, ApiError(error.status_code, code, message))
    response.headers.update(error.headers or {})
    return response


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def handle_auth_failure(request: Request, error: AuthFailure) -> Response:
    if is_page(request) and error.status == 401:
        # Quoted, so a path holding "&", "?" or "#" comes back whole as one
        # parameter; the query is kept, so filters survive the sign-in.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
    if is_page(request) and error.status == 403:
        return error_page(request, 403, error.message)
    return error_response(request, ApiError(error.status, error.code, error.message))


async def handle_call_error(request: Request, error: CallError) -> Response:
    return error_response(request, from_call_error(error))


async def handle_config_error(request: Request, error: ConfigError) -> Response:
    # Model calls turn the gateway's own configuration faults into 500 before
    # they get here, so what is left was raised by the request's own content
    # (a bad value, a revoked key to rotate), which the client can fix.
    return error_response(request, ApiError(400, "invalid_request", str(error)))


async def handle_validation_error(request: Request, error: RequestValidationError) -> Response:
    """Reject a body that does not match the API with 422, or with 400 for text that is not valid Unicode."""
    problems = []
    first_param = None
    status = 422
    for item in error.errors():
        kind = item.get("type")
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        if kind == "json_invalid":
            # FastAPI locates a JSON syntax error at ("body", offset), which names no parameter.
            offset = item.get("loc", ("body", "?"))[-1]
            reason = item.get("ctx", {}).get("error", "invalid JSON")
            problems.append(f"body: the body is not valid JSON ({reason} at character {offset})")
            continue
        if not location:
            problems.append(_body_problem(request, item))
            # A check of the whole body may name the field at fault, as the admin API's do.
            first_param = first_param or item.get("ctx", {}).get("field")
            continue
        if kind == LONE_SURROGATE:
            # A bad request (400), as the providers respond to text they cannot decode.
            status, problems, first_param = 400, [f"{location}: {item.get('msg')}"], location
            break
        first_param = first_param or location
        problems.append(f"{location}: {item.get('msg')}")
    message = "the request does not match the API: " + "; ".join(problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more"
    return error_response(request, ApiError(status, "invalid_request", message, param=first_param))


#: JSON type names by the Python type that `json.loads` returns for them.
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _body_problem(request: Request, item: dict) -> str:
    """Describe a problem with the body as a whole: missing, not JSON, or not a JSON object."""
    content_type = request.headers.get("content-type")
    if item.get("type") == "missing":
        return "body: the body is empty; send a JSON object with Content-Type: application/json"
    received = item.get("input")
    if isinstance(received, bytes):
        # FastAPI parses the body as JSON only when the content type is JSON.
        sent = f"instead of {content_type}" if content_type else "with it"
        return f"body: the body must be a JSON object; send Content-Type: application/json {sent}"
    if item.get("type") == "model_attributes_type":
        found = _JSON_TYPES.get(type(received), "not an object")
        return f"body: the body must be a JSON object, got {found}"
    return f"body: {item.get('msg')}"
