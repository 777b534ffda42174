"""Reading query parameters for pages and the read API, with errors that name the parameter.

Pages render a `QueryError` as an HTML page and the read API as JSON, both
with status 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime

#: Maximum length of a text parameter, such as a run id or a model name.
MAX_TEXT = 200


class QueryError(ValueError):
    """A query parameter that is invalid; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"query parameter {param!r}: {message}")
        self.param = param


class NotFound(LookupError):
    """The thing a page or API route names does not exist."""


def text(params: Mapping[str, str], name: str) -> str | None:
    """Return a text parameter with blanks trimmed, or None when absent or empty."""
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise QueryError(name, f"is {len(value)} characters long; the maximum is {MAX_TEXT}")
    return value


def integer(
    params: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int
) -> int:
    """Return a whole-number parameter between `minimum` and `maximum`, or `default` when absent."""
    raw = text(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(name, f"must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise QueryError(name, f"must be from {minimum} to {maximum}, got {value}")
    return value


def optional_integer(
    params: Mapping[str, str], name: str, *, minimum: int, maximum: int
) -> int | None:
    """Return a whole-number parameter between `minimum` and `maximum`, or None when absent."""
    if text(params, name) is None:
        return None
    return integer(params, name, minimum, minimum=minimum, maximum=maximum)


def choice(params: Mapping[str, str], name: str, options: tuple[str, ...]) -> str | None:
    """Return a parameter that must be one of `options`, or None when absent."""
    value = text(params, name)
    if value is not None and value not in options:
        raise QueryError(name, f"must be one of {', '.join(options)}, got {value!r}")
    return value


def day(params: Mapping[str, str], name: str) -> date | None:
    """Return a date given as YYYY-MM-DD, or None when absent."""
    raw = text(params, name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise QueryError(name, f"must be a date as YYYY-MM-DD, got {raw!r}") from None


def moment(params: Mapping[str, str], name: str) -> datetime | None:
    """Return a time given as YYYY-MM-DD or an ISO 8601 date and time, or None when absent.

    A time without a zone is taken as UTC, and a date alone means its midnight UTC.
    """
    raw = text(params, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise QueryError(
            name, f"must be a date or time such as 2026-12-01 or 2026-12-01T14:30, got {raw!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
