"""Exceptions raised by Trunkline.

The tree, split by whose fault a failure is::

    TrunklineError
    ├── ConfigError            the configuration file or an argument is invalid
    ├── WorkflowError          a workflow file, its data or one of its steps is invalid
    ├── StoreError             the record store cannot be opened or migrated
    ├── MlflowLoggingError     a batch run cannot be logged to MLflow
    ├── ScoringError           a scorer cannot score a row (trunkline.evals)
    │   └── JudgeError         the judge's reply held no usable verdict
    ├── ToolError              one tool call failed; the agent returns it to the model
    └── CallError              a model call ended without a usable response
        ├── ProviderError      one provider attempt failed (HTTP status, timeout, connection)
        ├── OutputInvalid      the output did not match the schema after every repair
        ├── BudgetExceeded     the call would cross a spending limit, so it was not sent
        └── AllDeploymentsFailed  every deployment of a route failed; keeps every cause

Every `CallError` carries an `ErrorKind` from one closed list, so that retry
and fallback decisions never depend on message text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


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
    QUOTA_EXCEEDED = "quota_exceeded"
    INVALID_OUTPUT = "invalid_output"
    EMPTY_OUTPUT = "empty_output"
    OUTPUT_TRUNCATED = "output_truncated"
    INVALID_TOOL_ARGUMENTS = "invalid_tool_arguments"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"
    #: The configuration or an argument stopped the call, such as a missing
    #: API key variable or an unreachable Redis; fix it and call again.
    CONFIGURATION = "configuration"

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again to the same model can succeed."""
        return self in _RETRYABLE

    @property
    def falls_back(self) -> bool:
        """Whether another deployment of the route may succeed where this one failed.

        The router narrows two of these: context_length goes only to a larger
        context window, content_filter only to deployments the route allows.
        """
        return self in _FALLS_BACK

    @property
    def repairable(self) -> bool:
        """Whether the output is at fault, so sending it back with the problem may fix it."""
        return self in _REPAIRABLE

    @property
    def counts_against_deployment(self) -> bool:
        """Whether this failure shows the deployment is unwell, for its circuit breaker."""
        return self in _UNHEALTHY


_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
    }
)
_REPAIRABLE = frozenset(
    {
        ErrorKind.INVALID_OUTPUT,
        ErrorKind.EMPTY_OUTPUT,
        ErrorKind.OUTPUT_TRUNCATED,
        ErrorKind.INVALID_TOOL_ARGUMENTS,
    }
)
_FALLS_BACK = (
    _RETRYABLE
    | _REPAIRABLE
    | {
        ErrorKind.AUTH,
        ErrorKind.NOT_FOUND,
        ErrorKind.QUOTA_EXCEEDED,
        ErrorKind.CONTEXT_LENGTH,
        ErrorKind.CONTENT_FILTER,
    }
)
_UNHEALTHY = _RETRYABLE | {ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.QUOTA_EXCEEDED}


class TrunklineError(Exception):
    """Base class of every exception Trunkline raises on purpose."""


class ConfigError(TrunklineError):
    """The configuration or an argument is invalid, and the message gives the fix."""


class WorkflowError(TrunklineError):
    """A workflow file, its dataset or one of its steps is invalid."""


class StoreError(TrunklineError):
    """The record store cannot be opened, migrated or written."""


class MlflowLoggingError(TrunklineError):
    """MLflow is missing or unreachable, or rejected a batch run's parameters, metrics or rows."""


class ToolErrorKind(StrEnum):
    """The reason a tool call failed."""

    #: The model named a tool that the agent does not have.
    UNKNOWN_TOOL = "unknown_tool"
    #: The arguments are not JSON, or not a JSON object.
    ARGUMENTS_NOT_JSON = "arguments_not_json"
    #: The arguments are JSON but do not match the tool's parameters.
    INVALID_ARGUMENTS = "invalid_arguments"
    #: The tool raised an exception.
    EXCEPTION = "exception"
    #: The tool ran past its timeout and was cancelled.
    TIMEOUT = "timeout"
    #: The tool returned a value that does not match its return annotation.
    INVALID_RESULT = "invalid_result"
    #: The call repeats one the run already made, with the same arguments,
    #: and the agent does not allow repeats.
    REPEATED_CALL = "repeated_call"
    #: The tool has made all the successful calls its `max_uses` allows.
    USED_UP = "used_up"


class ToolError(TrunklineError):
    """A tool call failed; the message is written for the model, which may try again."""

    def __init__(self, message: str, *, kind: ToolErrorKind, tool: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.tool = tool

    def __reduce__(self):  # keeps the keyword-only fields across pickling
        return (_rebuild, (type(self), self.args, self.__dict__))


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
    """The model's output failed validation after the allowed repairs.

    `kind` tells how: invalid_output, empty_output, output_truncated or
    invalid_tool_arguments.
    """

    def __init__(self, message: str, *, text: str, kind: ErrorKind = ErrorKind.INVALID_OUTPUT) -> None:
        super().__init__(message, kind=kind)
        self.text = text


class BudgetExceeded(CallError):
    """A call was not sent because its worst-case cost would cross a budget.

    Attributes:
        scope: the budget crossed, such as ``run:3f2a`` or ``tag:team=search``.
        limit_usd: that budget.
        spent_usd: what was spent or reserved under it before this call.
        needed_usd: this call's worst-case cost.
    """

    def __init__(
        self, message: str, *, scope: str, limit_usd: float, spent_usd: float, needed_usd: float
    ) -> None:
        super().__init__(message, kind=ErrorKind.BUDGET_EXCEEDED)
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd


class AllDeploymentsFailed(CallError):
    """Every deployment of a route failed; `kind` is the last failure's kind."""

    def __init__(self, message: str, *, kind: ErrorKind, causes: list[CallError]) -> None:
        super().__init__(message, kind=kind)
        self.causes = causes


def validation_problems(error: Any) -> str:
    """Join a pydantic ``ValidationError``'s problems as ``location: message`` pairs."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'top level'}: {problem['msg']}"
        for problem in error.errors()
    )
