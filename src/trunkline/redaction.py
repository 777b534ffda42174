"""Removing secrets from text before it is stored, logged or exported.

One function, `redact`, serves every path: provider error messages, call
records' error texts, span errors and log lines. It replaces:

- every API key Trunkline has read from the environment for a deployment
  (registered by `register_secret`);
- key formats of OpenAI and Anthropic (``sk-...``, ``sk-ant-...``), Groq,
  xAI and Google (``AIza...``);
- the values of ``Authorization`` (bearer or basic), ``api-key`` (Azure)
  and ``x-api-key`` (Anthropic) headers, and of ``key=`` or ``api_key=``
  query parameters;
- the password in a URL such as ``postgresql://user:password@host/db``;
- whatever the patterns added with `add_pattern` match, such as a user's
  own token format.
"""

from __future__ import annotations

import re
import threading
from typing import Any

REDACTED = "[REDACTED]"
#: Shorter strings are placeholders such as "not-needed", not keys.
MIN_SECRET_CHARS = 16

_KEY_FORMATS = (
    re.compile(r"\b(?:sk|gsk|xai)[-_][A-Za-z0-9_\-*.]{6,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),
)
# A header or field name, its separator, then the secret value that is replaced.
_NAMED_VALUES = (
    re.compile(r"(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic)\s+)[^\s\"',}]+", re.IGNORECASE),
    re.compile(r"(\bbearer\s+)[^\s\"',}]+", re.IGNORECASE),
    re.compile(r"(\b(?:x-)?api[-_]key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+", re.IGNORECASE),
    re.compile(r"([?&](?:api[-_]?)?key=)[^&\s\"']+", re.IGNORECASE),
    # The password of a URL's user information, as in https://user:password@host.
    re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)", re.IGNORECASE),
)

# Every match of the formats above contains one of these, lowercased. Most
# texts contain none, and looking for them costs a fraction of running the
# expressions, which matters for prompts redacted on every call.
_TRIGGERS = ("sk-", "sk_", "xai-", "xai_", "aiza", "bearer", "basic", "key", "@")

_lock = threading.Lock()
_secrets: set[str] = set()
_patterns: list[re.Pattern[str]] = []


def register_secret(value: str | None) -> None:
    """Remember a secret, such as an API key read from the environment, so `redact` removes it."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def add_pattern(pattern: str) -> None:
    """Also replace every match of the regular expression `pattern`.

    Raises:
        ValueError: `pattern` is not a valid regular expression.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"redaction pattern {pattern!r} is not a valid regular expression: {error}") from None
    with _lock:
        if compiled not in _patterns:
            _patterns.append(compiled)


def redact_value(value: Any) -> Any:
    """Return `value` with `redact` applied to every string in it, through lists and dicts."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    return value


def redact(text: str, extra_secrets: tuple[str | None, ...] = ()) -> str:
    """Return `text` with every known secret and key format replaced by ``[REDACTED]``."""
    if not text:
        return text
    for secret in (*_secrets, *extra_secrets):
        if secret and len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if any(trigger in lowered for trigger in _TRIGGERS):
        for pattern in _KEY_FORMATS:
            text = pattern.sub(REDACTED, text)
        for pattern in _NAMED_VALUES:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
    for pattern in _patterns:
        text = pattern.sub(REDACTED, text)
    return text
