"""Route policies that need no I/O: which deployment may take a call, and at what worst cost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from trunkline.config import Deployment, Route, Settings
from trunkline.errors import CallError, ErrorKind
from trunkline.pricing import price_usage
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import ToolDefinition
from trunkline.types.scores import TaskScore
from trunkline.types.usage import Usage


def estimate_input_tokens(request: ModelRequest) -> int:
    """Estimate the prompt's tokens at four characters a token, plus a few per message.

    Tool calls in the conversation and the tool definitions count too,
    because providers bill them as input.
    """
    characters = 0
    for message in request.messages:
        characters += len(message.content)
        if message.tool_calls:
            characters += sum(len(call.name) + len(call.arguments) for call in message.tool_calls)
    characters += tool_definition_characters(request.tools)
    return characters // 4 + 4 * len(request.messages) + 1


def tool_definition_characters(tools: Sequence[ToolDefinition]) -> int:
    """Return the characters that input estimates count for tool definitions.

    Each definition counts its name, description and JSON Schema.
    """
    return sum(
        len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters)) for tool in tools
    )


def reserved_tokens(request: ModelRequest, deployment: Deployment) -> int:
    """Return the tokens a request may use at most: the prompt plus its output cap."""
    return estimate_input_tokens(request) + _output_cap(request, deployment)


def _output_cap(request: ModelRequest, deployment: Deployment) -> int:
    return deployment.max_output_tokens if request.max_tokens is None else request.max_tokens


def worst_case_usd(
    settings: Settings, deployment: Deployment, request: ModelRequest, at: datetime
) -> float | None:
    """Return the cost of the request if it used its whole output cap; None when unpriced."""
    usage = Usage(
        input_tokens=estimate_input_tokens(request),
        output_tokens=_output_cap(request, deployment),
        estimated=True,
    )
    cost = price_usage(
        usage, deployment.model, provider=deployment.provider, at=at, overrides=settings.prices
    )
    return None if cost.price_missing else cost.total_usd


def unit_price_usd(settings: Settings, deployment: Deployment, at: datetime) -> float:
    """Return the price of a million input plus a million output tokens, for ordering by cost.

    An unpriced deployment sorts last, since it cannot be shown to be cheaper.
    """
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    cost = price_usage(
        usage, deployment.model, provider=deployment.provider, at=at, overrides=settings.prices
    )
    return float("inf") if cost.price_missing or cost.total_usd is None else cost.total_usd


@dataclass
class FallbackRules:
    """Constraints that earlier failures of a call put on the deployments tried after them."""

    #: After a context_length failure, later deployments need a larger window than this.
    context_window_above: int | None = None
    context_failed: bool = False
    #: After a content_filter refusal, only the route's allowed deployments are tried.
    content_filtered: bool = False

    def learn(self, error: CallError, deployment: Deployment) -> None:
        if error.kind is ErrorKind.CONTEXT_LENGTH:
            self.context_failed = True
            window = deployment.context_window
            if window is not None:
                self.context_window_above = max(self.context_window_above or 0, window)
        elif error.kind is ErrorKind.CONTENT_FILTER:
            self.content_filtered = True

    def reject_reason(self, name: str, deployment: Deployment, route: Route) -> tuple[str, str] | None:
        """Return why `name` may not take the call after the failures so far, or None."""
        if self.context_failed:
            window = deployment.context_window
            if window is None or self.context_window_above is None:
                return (
                    "context_window",
                    "a deployment ran out of context, and the context windows needed to "
                    "pick a larger one are not configured (set context_window)",
                )
            if window <= self.context_window_above:
                return (
                    "context_window",
                    f"its context window of {window} tokens is not larger than the "
                    f"{self.context_window_above} that was exceeded",
                )
        if self.content_filtered and name not in route.content_filter_fallbacks:
            return (
                "content_filter_not_allowed",
                "the route does not list it in content_filter_fallbacks",
            )
        return None


def score_downgrade(
    route: Route, scores: dict[str, TaskScore], candidates: list[str], task: str
) -> tuple[str, str] | None:
    """Return the cheapest candidate whose golden-set score is close enough, with the reason.

    `candidates` are in order of price, cheapest first. Scores count only
    when both were measured on the same rows.
    """
    preferred = scores.get(route.deployments[0])
    if preferred is None:
        return None
    for name in candidates:
        score = scores.get(name)
        if score is None or score.dataset_hash != preferred.dataset_hash:
            continue
        if score.mean_score >= preferred.mean_score - route.downgrade_tolerance:
            scored_on = f"task {task!r}" + (f" with prompt {score.prompt}" if score.prompt else "")
            return name, (
                f"golden-set score on {scored_on} is {score.mean_score:.3f} against "
                f"{preferred.mean_score:.3f} for {route.deployments[0]} "
                f"(tolerance {route.downgrade_tolerance})"
            )
    return None
