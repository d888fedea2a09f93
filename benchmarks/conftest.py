"""Benchmarks run for minutes at full size: the tests' 5-minute hang guard (pyproject's
``timeout``) becomes 30 minutes here."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.timeout(1800))
