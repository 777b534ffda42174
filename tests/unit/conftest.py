"""Fixtures for unit tests: an exporter that keeps records in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trunkline.tracing import add_exporter, remove_exporter
from unit.helpers import ListExporter


@pytest.fixture
def exported() -> Iterator[ListExporter]:
    exporter = ListExporter()
    add_exporter(exporter)
    try:
        yield exporter
    finally:
        remove_exporter(exporter)
