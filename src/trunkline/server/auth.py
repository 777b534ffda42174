"""Who is calling: the key in a request, its role, and the checks every route declares.

A key may come as ``Authorization: Bearer KEY`` (the OpenAI SDK), as
``x-api-key: KEY`` (the Anthropic SDK) or in the dashboard's session cookie.
Looked-up keys are cached for a few seconds, so the hot path costs one
SHA-256 and a dictionary read; a miss reads the store in a worker thread. A revocation through this process takes
effect at once, and in other worker processes within `ttl_s`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from trunkline.store.database import Store
from trunkline.store.keys import ApiKey, Role, allows, find_key, hash_key

SESSION_COOKIE = "trunkline_session"


class AuthFailure(Exception):
    """A request without a usable key (401) or with a key whose role is too low (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class KeyCache:
    """Keys by hash, read from the store and kept for `ttl_s` seconds."""

    def __init__(self, store: Store, *, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        # Counts `forget` calls. The admin routes call it from the thread
        # pool while lookups run on the event loop, so a lookup that read the
        # store before a revocation committed must not cache what it read.
        self._generation = 0

    async def lookup(self, secret: str) -> ApiKey | None:
        """Return the key for `secret` (None when unknown), reading the store off the event loop on a miss."""
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        if entry is not None and time.monotonic() - entry[0] < self.ttl_s:
            return entry[1]
        # A store read can take a network round trip on a shared database, so it
        # runs in a worker thread while requests with other keys go on.
        return await run_in_threadpool(self._load, secret, digest)

    def _load(self, secret: str, digest: str) -> ApiKey | None:
        """Read the key for `secret` from the store and cache the result, known or not."""
        now = time.monotonic()
        generation = self._generation
        key = find_key(self.store, secret)
        if len(self._entries) > 10_000:
            # Unknown keys are cached too, so a flood of bad keys cannot grow this without end.
            self._entries.clear()
        if generation == self._generation:
            self._entries[digest] = (now, key)
        return key

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache after it was revoked or changed here."""
        self._generation += 1
        for digest, (_, key) in list(self._entries.items()):
            if key is not None and key.key_id == key_id:
                self._entries.pop(digest, None)


def presented_key(request: Request) -> str | None:
    """Return the key a request carries, from its headers or its session cookie."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key.strip()
    return request.cookies.get(SESSION_COOKIE)


async def authenticate(cache: KeyCache, secret: str | None) -> ApiKey:
    """Return the active key for `secret`, or raise a 401 `AuthFailure` saying why not."""
    if not secret:
        raise AuthFailure(
            401,
            "missing_api_key",
            "no API key was sent; send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY' "
            "(`trunkline keys create` makes one)",
        )
    key = await cache.lookup(secret)
    if key is None:
        raise AuthFailure(401, "invalid_api_key", "the API key is not known to this gateway; check it, or create a new one")
    state = key.state(datetime.now(UTC))
    if state != "active":
        raise AuthFailure(
            401, f"{state}_api_key", f"the API key {key.key_id} is {state}; ask an admin for a new one"
        )
    return key


class require:  # noqa: N801 - used like a function in route signatures
    """A route dependency that admits keys of `role` or above and returns the key.

    Every route but the public ones declares one; the role-matrix test reads
    `role` from each route's dependencies.
    """

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, request: Request) -> ApiKey:
        key = await authenticate(request.app.state.keys, presented_key(request))
        # Set before the role check, so a dashboard page's 403 shows the key's navigation.
        request.state.key = key
        if not allows(key.role, self.role):
            raise AuthFailure(
                403,
                "permission_denied",
                f"the key {key.key_id} has role {key.role.value}; this endpoint needs {_needed(self.role)}",
            )
        return key


def _needed(role: Role) -> str:
    """Name the roles that may use an endpoint that declares `role`, as `allows` admits them."""
    if role is Role.METRICS:
        return "role admin or metrics"
    if role is Role.ADMIN:
        return "role admin"
    return f"role {role.value} or above"
