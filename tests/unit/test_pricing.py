"""Pricing: overrides, genai-prices, unknown models, and no network use."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.config import Price
from trunkline.pricing import price_usage
from trunkline.types import Usage

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def test_override_counts_cache_reads_at_their_rate() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=500_000)
    price = Price(input_per_mtok=2.0, output_per_mtok=8.0, cache_read_per_mtok=0.5)
    cost = price_usage(usage, "mine", provider="openai", at=NOW, overrides={"mine": price})
    assert cost.input_usd == pytest.approx(1.0 + 0.25)
    assert cost.output_usd == pytest.approx(8.0)
    assert cost.source == "config"


def test_zero_price_is_zero_not_missing() -> None:
    price = Price(input_per_mtok=0, output_per_mtok=0)
    cost = price_usage(Usage(input_tokens=5), "local", provider="local", at=NOW, overrides={"local": price})
    assert cost.total_usd == 0.0
    assert cost.price_missing is False


def test_unknown_model_price_missing() -> None:
    cost = price_usage(Usage(input_tokens=5), "no-such-model-xyz", provider=None, at=NOW, overrides={})
    assert cost.total_usd is None
    assert cost.price_missing


def test_anthropic_cache_write_priced() -> None:
    usage = Usage(input_tokens=1_000_000, cache_write_tokens=1_000_000)
    cost = price_usage(usage, "claude-3-5-haiku-latest", provider="anthropic", at=NOW, overrides={})
    assert cost.total_usd is not None
    assert cost.total_usd > 0


def test_pricing_makes_no_network_call(monkeypatch) -> None:
    def reject_connection(*arguments, **options):
        raise AssertionError("pricing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket, "create_connection", reject_connection)
    cost = price_usage(Usage(input_tokens=10), "gpt-4o", provider="openai", at=NOW, overrides={})
    assert cost.total_usd is not None


FLAT_MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("claude-3-5-haiku-latest", "anthropic"),
    ("claude-sonnet-4-5", "anthropic"),
]


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(FLAT_MODELS),
    input_tokens=st.integers(0, 300_000),
    output_tokens=st.integers(0, 50_000),
    cached_share=st.floats(0, 1),
)
def test_fast_path_matches_genai_prices(model, input_tokens, output_tokens, cached_share) -> None:
    import genai_prices

    name, provider = model
    cache_read = int(input_tokens * cached_share)
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read)
    cost = price_usage(usage, name, provider=provider, at=NOW, overrides={})
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read
        ),
        name,
        provider_id=provider,
        genai_request_timestamp=NOW,
    )
    assert cost.total_usd == pytest.approx(float(expected.total_price), rel=1e-9, abs=1e-12)
