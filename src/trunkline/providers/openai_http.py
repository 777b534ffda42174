"""The `openai` SDK's wire behaviour, reproduced for `HttpPool`.

`OpenAIProvider` sends plain chat completions through `HttpPool` when the
SDK client would send them unchanged over its default transport. The helpers
here read the URL, headers and TLS settings from that client, encode the body
as the SDK does, and give error bodies the shape that the SDK path reads.
The SDK internals they read were checked against openai 3.60 with httpx2
2.16; when one is missing, the SDK path stays in use.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import openai
from pydantic import BaseModel

try:
    from trunkline.providers.http_pool import HttpPool
except ImportError:  # httptools is missing, so every call goes through the SDK.
    HttpPool = None  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

CHAT_PATH = "/chat/completions"


def pool_for_client(client: openai.AsyncOpenAI) -> HttpPool | None:
    """Build an `HttpPool` that sends what `client` would send, or None when it cannot.

    None for Azure and any other subclass, for clients with dynamic
    credentials, a timeout, default query parameters, a proxy or an HTTP
    client of the caller's, and when httptools is not installed.
    """
    if HttpPool is None or type(client) is not openai.AsyncOpenAI:
        return None
    try:
        return _pool_for_plain_client(client)
    except (AttributeError, ImportError, TypeError, ValueError) as error:
        logger.debug("chat completions keep the openai SDK transport: %r", error)
        return None


def _pool_for_plain_client(client: openai.AsyncOpenAI) -> HttpPool | None:
    import httpx2
    from openai._base_client import AsyncHttpxClientWrapper
    from openai._models import FinalRequestOptions

    dynamic_auth = (
        client._provider_runtime is not None
        or client.workload_identity is not None
        or client._api_key_provider is not None
    )
    if dynamic_auth or client.timeout is not None or client._custom_query:
        return None
    http = client._client
    transport = http._transport
    # The SDK builds this client class only when the caller passes none. A
    # caller's own client may carry hooks or auth, and proxies from the
    # environment become mounts, so those keep the SDK transport.
    if type(http) is not AsyncHttpxClientWrapper or http._mounts:
        return None
    if type(transport) is not httpx2.AsyncHTTPTransport:
        return None
    connections = transport._pool
    if connections._proxy is not None or connections._uds is not None:
        return None
    if client.base_url.query:
        return None
    options = FinalRequestOptions.construct(method="post", url=CHAT_PATH, json_data=None)
    # The client's own defaults (Accept-Encoding, Connection) first, then the
    # SDK's request headers, which win where both set one, as in httpx.
    headers = {**http.headers, **client._build_headers(options)}
    return HttpPool(str(client.base_url), headers, ssl_context=connections._ssl_context)


def encode_body(arguments: dict[str, Any]) -> bytes:
    """Encode a request body as the SDK does: compact UTF-8 JSON without NaN or infinities."""
    return json.dumps(
        arguments, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_encode_other
    ).encode()


def _encode_other(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True, mode="json", by_alias=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_body(text: str) -> object:
    """Return the error body as the SDK path reads it: the decoded JSON, else the text.

    The SDK keeps only the object under ``"error"``, and when that is null it
    has no body at all, so neither has this.
    """
    stripped = text.strip()
    try:
        decoded = json.loads(stripped)
    except ValueError:
        return stripped
    inner = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
    return None if inner is None else decoded
