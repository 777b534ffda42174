"""Token usage and cost of one call."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Usage(BaseModel):
    """Tokens a call consumed, as the provider reported them.

    Cached tokens are counted inside `input_tokens`, and reasoning tokens
    inside `output_tokens`, as OpenAI reports them. Adapters for providers
    that report them apart (Anthropic) add them in.
    """

    model_config = ConfigDict(frozen=True)

    #: Prompt tokens, cache reads and cache writes included.
    input_tokens: int = 0
    #: Completion tokens, reasoning tokens included.
    output_tokens: int = 0
    #: Input tokens served from the provider's prompt cache.
    cache_read_tokens: int = 0
    #: Input tokens written to the provider's prompt cache.
    cache_write_tokens: int = 0
    #: Output tokens spent on hidden reasoning.
    reasoning_tokens: int = 0
    #: True when any count was estimated instead of reported by the provider.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


class Cost(BaseModel):
    """The price of a call's usage in US dollars.

    `total_usd` is None, never 0, when no price was known for the model;
    `price_missing` is then True.
    """

    model_config = ConfigDict(frozen=True)

    input_usd: float | None = None
    output_usd: float | None = None
    total_usd: float | None = None
    #: Where the price came from: ``config`` or ``genai-prices <version>``.
    source: str | None = None
    price_missing: bool = False

    @classmethod
    def missing(cls) -> Cost:
        return cls(price_missing=True)
