"""Every async test runs twice: on asyncio's default loop and on uvloop (we promise both)."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "asyncstrax",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# CI explores the same examples every run, so a red build is reproducible from its log.
settings.register_profile("asyncstrax-ci", parent=settings.get_profile("asyncstrax"),
                          derandomize=True)
settings.load_profile("asyncstrax-ci" if os.environ.get("CI") else "asyncstrax")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item):
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
