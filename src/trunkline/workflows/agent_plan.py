"""Agent step estimates for `trunkline plan`: typical and worst-case calls, tokens and cost.

The typical figures are the medians of the step's rows in earlier runs.
The worst case reaches every bound: ``max_steps`` model calls, each
sending the whole prompt, the tool definitions and the conversation grown
by the output cap of every earlier reply. Without recorded rows, the
typical figures are computed as the worst case is, with `ASSUMED_CALLS`
model calls per row in place of ``max_steps``. Tool results are not
counted in either, because their size has no bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import median

from pydantic import BaseModel

from trunkline.store.agent_rows import AgentRowUsage

#: Model calls per row that the typical figures assume without recorded rows:
#: a tool round and an answer.
ASSUMED_CALLS = 2

#: Prices tokens: (input tokens, output tokens) to USD, or None when no price is known.
PriceTokens = Callable[[int, int], "float | None"]


class AgentFigures(BaseModel):
    """Model calls, tokens and cost of an agent step, for one row or for every row of a run."""

    model_calls: float
    input_tokens: float
    output_tokens: float
    #: USD online; None when no price is known.
    cost_usd: float | None


class AgentEstimate(BaseModel):
    """An agent step's typical and worst-case figures, per row and for the whole run."""

    max_steps: int
    #: Input tokens of the step's tool definitions, sent with every model call.
    tool_tokens: int
    #: The output cap of each reply: the step's ``max_tokens``, else the
    #: deployment's ``max_output_tokens``.
    reply_tokens: int
    #: Recorded rows of earlier runs behind the typical figures; 0 under the assumption.
    recorded_rows: int = 0
    #: Where the typical figures come from, such as the medians of recorded rows or the assumption.
    typical_source: str = ""
    #: Medians of the recorded rows, or the mean row under the assumption.
    typical_row: AgentFigures | None = None
    typical_run: AgentFigures | None = None
    #: The row with the largest worst case, which a per-row budget must cover.
    worst_row: AgentFigures | None = None
    worst_run: AgentFigures | None = None


def loop_tokens(
    prompt_tokens: int, tool_tokens: int, reply_tokens: int, calls: int
) -> tuple[int, int]:
    """Return the input and output tokens of `calls` model calls that each reach their output cap.

    Call k sends the prompt, the tool definitions and the k - 1 earlier
    replies, so the input grows by `reply_tokens` with every call.
    """
    input_tokens = calls * (prompt_tokens + tool_tokens) + reply_tokens * calls * (calls - 1) // 2
    return input_tokens, calls * reply_tokens


def bounded_figures(
    estimate: AgentEstimate, row_prompt_tokens: Sequence[int], calls: int, price: PriceTokens
) -> tuple[AgentFigures, AgentFigures, AgentFigures]:
    """Return the mean row, the largest row and the run when every row makes `calls` full calls."""
    rows = [
        loop_tokens(tokens, estimate.tool_tokens, estimate.reply_tokens, calls)
        for tokens in row_prompt_tokens
    ]
    costs = [price(input_tokens, output_tokens) for input_tokens, output_tokens in rows]
    known = None if any(cost is None for cost in costs) else [cost or 0.0 for cost in costs]
    input_total = sum(input_tokens for input_tokens, _ in rows)
    output_total = sum(output_tokens for _, output_tokens in rows)
    run = AgentFigures(
        model_calls=calls * len(rows),
        input_tokens=input_total,
        output_tokens=output_total,
        cost_usd=None if known is None else sum(known),
    )
    mean = AgentFigures(
        model_calls=calls,
        input_tokens=input_total / len(rows),
        output_tokens=output_total / len(rows),
        cost_usd=None if known is None else sum(known) / len(rows),
    )
    largest = max(range(len(rows)), key=lambda position: rows[position][0])
    worst = AgentFigures(
        model_calls=calls,
        input_tokens=rows[largest][0],
        output_tokens=rows[largest][1],
        cost_usd=None if known is None else known[largest],
    )
    return mean, worst, run


def recorded_figures(
    recorded: Sequence[AgentRowUsage], row_count: int, price: PriceTokens
) -> tuple[AgentFigures, AgentFigures]:
    """Return the medians of the recorded rows, and those medians times `row_count`.

    The median cost is of the recorded costs when every row was priced;
    otherwise it is the median tokens at today's prices.
    """
    calls = median(row.model_calls for row in recorded)
    input_tokens = median(row.input_tokens for row in recorded)
    output_tokens = median(row.output_tokens for row in recorded)
    costs = [row.cost_usd for row in recorded]
    if all(cost is not None for cost in costs):
        cost = median(cost or 0.0 for cost in costs)
    else:
        cost = price(round(input_tokens), round(output_tokens))
    row = AgentFigures(
        model_calls=calls, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost
    )
    run = AgentFigures(
        model_calls=calls * row_count,
        input_tokens=input_tokens * row_count,
        output_tokens=output_tokens * row_count,
        cost_usd=None if cost is None else cost * row_count,
    )
    return row, run


def estimate_agent(
    *,
    max_steps: int,
    tool_tokens: int,
    reply_tokens: int,
    row_prompt_tokens: Sequence[int] | None,
    recorded: Sequence[AgentRowUsage],
    row_count: int,
    price: PriceTokens,
) -> AgentEstimate:
    """Estimate an agent step over `row_count` rows.

    `row_prompt_tokens` contains each row's rendered prompt tokens, or None
    when the prompts cannot be rendered, which leaves out the worst case and,
    without `recorded` rows, the typical figures too.
    """
    estimate = AgentEstimate(
        max_steps=max_steps, tool_tokens=tool_tokens, reply_tokens=reply_tokens
    )
    if row_prompt_tokens:
        _, estimate.worst_row, estimate.worst_run = bounded_figures(
            estimate, row_prompt_tokens, max_steps, price
        )
    if recorded:
        estimate.recorded_rows = len(recorded)
        estimate.typical_source = f"medians of {len(recorded)} recorded rows of earlier runs"
        estimate.typical_row, estimate.typical_run = recorded_figures(recorded, row_count, price)
    elif row_prompt_tokens:
        calls = min(ASSUMED_CALLS, max_steps)
        estimate.typical_row, _, estimate.typical_run = bounded_figures(
            estimate, row_prompt_tokens, calls, price
        )
        explanation, noun = "the step's max_steps", "model call"
        if calls == ASSUMED_CALLS:
            explanation, noun = "a tool round and an answer", "model calls"
        estimate.typical_source = (
            f"an assumption, without recorded rows of earlier runs: {calls} {noun} per row "
            f"({explanation}), each reply up to {reply_tokens} tokens"
        )
    return estimate
