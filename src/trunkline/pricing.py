"""The cost of a call's usage, from configuration overrides or genai-prices.

Prices come from the data bundled with the installed ``genai-prices``
package. Its background updater (`genai_prices.UpdatePrices`) is never
started, so pricing never touches the network. A model with no known price
gets `Cost.missing()`, never a silent zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache

from trunkline.config import Price
from trunkline.types.usage import Cost, Usage

logger = logging.getLogger(__name__)

_PER_MTOK = 1_000_000


def price_usage(
    usage: Usage,
    model: str,
    *,
    provider: str | None,
    at: datetime,
    overrides: dict[str, Price],
) -> Cost:
    """Return the cost of `usage` on `model` at time `at`.

    An override keyed by the model name wins. Otherwise the price comes
    from genai-prices, looked up with the provider where genai-prices has it.
    """
    override = overrides.get(model)
    if override is not None:
        return _cost_from_override(usage, override)
    return _cost_from_genai_prices(usage, model, provider, at)


def _cost_from_override(usage: Usage, price: Price) -> Cost:
    cache_read_rate = (
        price.input_per_mtok if price.cache_read_per_mtok is None else price.cache_read_per_mtok
    )
    cache_write_rate = (
        price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
    )
    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    input_usd = (
        max(uncached, 0) * price.input_per_mtok
        + usage.cache_read_tokens * cache_read_rate
        + usage.cache_write_tokens * cache_write_rate
    ) / _PER_MTOK
    output_usd = usage.output_tokens * price.output_per_mtok / _PER_MTOK
    return Cost(
        input_usd=input_usd,
        output_usd=output_usd,
        total_usd=input_usd + output_usd,
        source="config",
    )


def batch_cost(cost: Cost, factor: float) -> Cost:
    """Return `cost` at a Batch API's price, `factor` times the online price.

    A missing price stays missing; the source names the factor, so a report
    shows how the figure was made.
    """
    if cost.price_missing or cost.total_usd is None:
        return cost
    return Cost(
        input_usd=None if cost.input_usd is None else cost.input_usd * factor,
        output_usd=None if cost.output_usd is None else cost.output_usd * factor,
        total_usd=cost.total_usd * factor,
        source=f"{cost.source}, batch x{factor:g}",
    )


# genai-prices names providers by its own ids; ours map onto them.
_GENAI_PROVIDER_IDS = {"openai": "openai", "azure": "azure", "anthropic": "anthropic"}


@dataclass(frozen=True)
class _Rates:
    """Flat USD prices per million tokens; None where the model has no such price."""

    input: float
    output: float
    cache_read: float | None
    cache_write: float | None


_TIERED = object()
_UNKNOWN = object()


@lru_cache(maxsize=4096)
def _flat_rates(model: str, provider_id: str | None, day: date) -> _Rates | object:
    """Look up a model's prices once per day, or mark them tiered or unknown.

    `genai_prices.calc_price` costs about 200 us a call, more than the rest
    of a call's bookkeeping together, so flat prices are read once and
    multiplied here. Tiered prices, which depend on the prompt's length, are
    left to genai-prices. The price in force at the start of the UTC day is
    used for the whole day.
    """
    from genai_prices import data_snapshot

    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        return _UNKNOWN
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    prices = info.get_prices(moment)
    values = [getattr(prices, name, None) for name in _TOKEN_PRICES]
    if any(value is not None and not isinstance(value, Decimal) for value in values):
        return _TIERED
    input_rate, output_rate, cache_read_rate, cache_write_rate = values
    if input_rate is None or output_rate is None:
        return _TIERED
    return _Rates(
        input=float(input_rate),
        output=float(output_rate),
        cache_read=None if cache_read_rate is None else float(cache_read_rate),
        cache_write=None if cache_write_rate is None else float(cache_write_rate),
    )


_TOKEN_PRICES = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def _cost_from_flat_rates(usage: Usage, rates: _Rates, source: str) -> Cost | None:
    """Price `usage` at flat rates, or return None when a needed rate is missing."""
    if usage.cache_read_tokens and rates.cache_read is None:
        return None
    if usage.cache_write_tokens and rates.cache_write is None:
        return None
    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    input_usd = (
        uncached * rates.input
        + usage.cache_read_tokens * (rates.cache_read or 0.0)
        + usage.cache_write_tokens * (rates.cache_write or 0.0)
    ) / _PER_MTOK
    output_usd = usage.output_tokens * rates.output / _PER_MTOK
    return Cost(
        input_usd=input_usd, output_usd=output_usd, total_usd=input_usd + output_usd, source=source
    )


def _cost_from_genai_prices(usage: Usage, model: str, provider: str | None, at: datetime) -> Cost:
    import genai_prices

    provider_id = _GENAI_PROVIDER_IDS.get(provider or "")
    rates = _flat_rates(model, provider_id, at.astimezone(UTC).date())
    if rates is _UNKNOWN:
        _warn_missing(model, provider)
        return Cost.missing()
    if isinstance(rates, _Rates):
        cost = _cost_from_flat_rates(usage, rates, f"genai-prices {genai_prices.__version__}")
        if cost is not None:
            return cost
    priced = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    try:
        result = genai_prices.calc_price(
            priced, model, provider_id=provider_id, genai_request_timestamp=at
        )
    except LookupError:
        _warn_missing(model, provider)
        return Cost.missing()
    return Cost(
        input_usd=float(result.input_price),
        output_usd=float(result.output_price),
        total_usd=float(result.total_price),
        source=f"genai-prices {genai_prices.__version__}",
    )


@lru_cache(maxsize=256)
def _warn_missing(model: str, provider: str | None) -> None:
    """Warn once per model that its calls are recorded with no cost."""
    logger.warning(
        "no price known for model %r (provider %s); its calls are recorded with cost null. "
        "Add [prices.%s] to trunkline.toml to set one",
        model,
        provider,
        model,
    )
