"""Exceptions raised by Trunkline.

The tree, split by whose fault a failure is::

    TrunklineError
    ├── ConfigError            the configuration file or an argument is invalid
    ├── WorkflowError          a workflow file, its data or one of its steps is invalid
    ├── StoreError             the record store cannot be opened or migrated
    └── CallError              a model call ended without a usable response
        ├── ProviderError      one provider attempt failed (HTTP status, timeout, connection)
        ├── OutputInvalid      the output did not match the schema after every repair
        └── AllDeploymentsFailed  every deployment of a route failed; keeps every cause

Every `CallError` carries an `ErrorKind` from one closed list, so that retry
and fallback decisions never depend on message text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """The reason a model call or attempt failed."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTER = "content_filter"
    INVALID_OUTPUT = "invalid_output"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again to the same model can succeed."""
        return self in _RETRYABLE

    @property
    def falls_back(self) -> bool:
        """Whether another deployment of the route may succeed where this one failed."""
        return self in _FALLS_BACK


_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
    }
)
_FALLS_BACK = _RETRYABLE | {
    ErrorKind.AUTH,
    ErrorKind.NOT_FOUND,
    ErrorKind.CONTEXT_LENGTH,
    ErrorKind.INVALID_OUTPUT,
}


class TrunklineError(Exception):
    """Base class of every exception Trunkline raises on purpose."""


class ConfigError(TrunklineError):
    """The configuration or an argument is invalid, and the message gives the fix."""


class WorkflowError(TrunklineError):
    """A workflow file, its dataset or one of its steps is invalid."""


class StoreError(TrunklineError):
    """The record store cannot be opened, migrated or written."""


class CallError(TrunklineError):
    """A model call failed with a known `ErrorKind`."""

    def __init__(self, message: str, *, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keeps the keyword-only fields across pickling
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type, args: tuple, state: dict) -> Exception:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ProviderError(CallError):
    """One attempt at a provider failed.

    Attributes:
        provider: adapter name, such as ``openai`` or ``local``.
        model: the model the attempt asked for.
        status_code: the HTTP status, or None where no response came.
        retry_after_s: the wait the provider asked for in seconds, from
            ``retry-after-ms`` or ``Retry-After``, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        provider: str,
        model: str,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, kind=kind)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class OutputInvalid(CallError):
    """The model's output failed schema validation after the allowed repairs."""

    def __init__(self, message: str, *, text: str) -> None:
        super().__init__(message, kind=ErrorKind.INVALID_OUTPUT)
        self.text = text


class AllDeploymentsFailed(CallError):
    """Every deployment of a route failed; `kind` is the last failure's kind."""

    def __init__(self, message: str, *, kind: ErrorKind, causes: list[CallError]) -> None:
        super().__init__(message, kind=kind)
        self.causes = causes
