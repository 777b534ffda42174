"""The dashboard's USD amounts: cents for whole dollars, four significant digits below a cent, no exponents."""

from __future__ import annotations

import pytest

from trunkline.server.dashboard.rendering import format_usd


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (0.0, "$0.00"),
        (1234.5, "$1,234.50"),
        (0.25, "$0.2500"),
        (0.0012345, "$0.001234"),
        (0.000036, "$0.000036"),
        (0.0000000012, "$0.0000000012"),
    ],
)
def test_usd_amounts(value: float | None, text: str) -> None:
    assert format_usd(value) == text
