"""The errors a call ends with when no attempt could be made or none succeeded."""

from __future__ import annotations

import logging

from trunkline.errors import AllDeploymentsFailed, CallError, ErrorKind, ProviderError
from trunkline.redaction import redact
from trunkline.routing.state import CallState

logger = logging.getLogger(__name__)


def deadline_passed(state: CallState, failures: list[CallError]) -> CallError:
    last = f"; the last failure was: {failures[-1]}" if failures else ""
    return CallError(
        f"the deadline of {state.policy.deadline_s:g}s for route {state.route_name!r} passed "
        f"before the call could finish{last}",
        kind=ErrorKind.TIMEOUT,
    )


def route_failure(state: CallState, failures: list[CallError]) -> CallError:
    if not failures:
        skipped = "; ".join(f"{hop.deployment}: {hop.detail}" for hop in state.fallbacks)
        return AllDeploymentsFailed(
            f"no deployment of route {state.route_name!r} could take the call: {skipped}",
            kind=ErrorKind.OVERLOADED,
            causes=[],
        )
    last = failures[-1]
    if len(failures) == 1:
        return last
    return AllDeploymentsFailed(
        f"every deployment of route {state.route_name!r} failed; last error: {last}",
        kind=last.kind,
        causes=failures,
    )


def attempt_failure(
    error: Exception, deployment: str, provider: str, model: str, timeout_s: float
) -> ProviderError:
    """Turn a timeout, or an adapter's failure to read a response, into a `ProviderError`."""
    if isinstance(error, TimeoutError):
        return ProviderError(
            f"attempt at {deployment} timed out after {max(timeout_s, 0.0):.3g}s",
            kind=ErrorKind.TIMEOUT,
            provider=provider,
            model=model,
        )
    # An adapter that cannot read the response (an HTML page, a body with no
    # choices) is treated as a server fault, so the attempt is recorded,
    # retried and can fall back like any other.
    logger.warning("deployment %s returned a response the adapter cannot read: %r", deployment, error)
    return ProviderError(
        redact(
            f"{provider} returned a malformed response for model {model!r}: "
            f"{type(error).__name__}: {error}"
        ),
        kind=ErrorKind.SERVER_ERROR,
        provider=provider,
        model=model,
    )
