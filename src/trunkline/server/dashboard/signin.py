"""Signing in to the dashboard with a key, and signing out.

The key itself is the session: it is kept in an HTTP-only, SameSite=Strict
cookie that `trunkline.server.auth` reads like a header, so revoking the key
ends every session that uses it.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trunkline.server.auth import SESSION_COOKIE, AuthFailure, authenticate
from trunkline.server.dashboard.rendering import render
from trunkline.store.keys import Role, allows

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: Paths served without a key.
PUBLIC_PATHS = frozenset({"/login", "/logout"})

# A sign-in form contains a key and a path; anything much larger is not one.
_MAX_FORM_BYTES = 8192


def safe_next(value: str | None) -> str:
    """Return `value` if it is a path on this server, else ``/``.

    A full URL or a scheme-relative ``//host`` path would send the user to
    another site after signing in, so both are replaced.
    """
    if not value or len(value) > 2000:
        return "/"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(character) < 32 for character in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith(("/login", "/logout")):
        return "/"
    return value


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """Render the sign-in form."""
    next_path = safe_next(request.query_params.get("next"))
    return render(request, "login.html", title="Sign in", next=next_path, message=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the key from the form, keep it in the session cookie, and go to `next`."""
    refusal = _cross_site(request)
    if refusal is not None:
        return refusal

    form = await _read_form(request)
    if form is None:
        message = "The form could not be read; send it again."
        return render(request, "login.html", status=400, next="/", message=message)
    secret = form.get("key", "").strip()
    next_path = safe_next(form.get("next"))

    try:
        key = await authenticate(request.app.state.keys, secret)
    except AuthFailure as failure:
        logger.info("dashboard sign-in rejected: %s", failure.code)
        message = _sign_in_message(failure)
        return render(request, "login.html", status=401, next=next_path, message=message)
    if not allows(key.role, Role.VIEWER):
        logger.info("dashboard sign-in rejected: key %s has role %s", key.key_id, key.role.value)
        message = (
            f"The key {key.key_id} has role {key.role.value}, which cannot open the dashboard; "
            "use a viewer, developer or admin key."
        )
        return render(request, "login.html", status=403, next=next_path, message=message)

    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Clear the session cookie and return to the sign-in form."""
    refusal = _cross_site(request)
    if refusal is not None:
        return refusal
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _sign_in_message(failure: AuthFailure) -> str:
    if failure.code == "missing_api_key":
        return "Enter a key to sign in."
    if failure.code == "invalid_api_key":
        return "That key is not known to this gateway; check it, or ask an admin for a key."
    return failure.message[:1].upper() + failure.message[1:] + "."


def _cross_site(request: Request) -> Response | None:
    """Reject a form posted from another site, which a browser marks with its Origin header."""
    origin = request.headers.get("origin")
    if origin is None or urlsplit(origin).netloc == request.headers.get("host"):
        return None
    message = "The form was sent from another site; sign in here."
    return render(request, "login.html", status=403, next="/", message=message)


async def _read_form(request: Request) -> dict[str, str] | None:
    """Return the fields of a URL-encoded form, or None for another or an oversized body."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    return {name: values[0] for name, values in fields.items()}
