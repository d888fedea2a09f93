"""How big a benchmark runs: full size with ``--benchmark-enable``, 10x smaller otherwise.

pytest's default options here include ``--benchmark-disable``, so ``pytest benchmarks`` is a
quick check that every benchmark works, and ``--benchmark-enable`` measures. Not a test module.
"""

from __future__ import annotations

import os

import pytest


def benchmarks_enabled(config: pytest.Config) -> bool:
    """Whether this pytest run measures (``--benchmark-enable``) or only checks."""
    return bool(config.getoption("benchmark_enable", False)) or not config.getoption(
        "benchmark_disable", False)


def bench_size(config: pytest.Config, full: float, small: float, env: str | None = None
               ) -> float:
    """``full`` when measuring, ``small`` otherwise; the environment variable ``env``, when
    set, overrides both."""
    if env is not None and env in os.environ:
        return float(os.environ[env])
    return full if benchmarks_enabled(config) else small
