"""Dask is optional: import it when a call needs it, or say what to install."""

from __future__ import annotations

from typing import Any

__all__ = ["INSTALL_HINT"]

INSTALL_HINT = 'pip install "asyncstrax[distributed]"'


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            f"processing many runs needs Dask distributed, which is not installed: "
            f"{INSTALL_HINT}  (missing: {error.name or error})"
        ) from error
    return distributed


def _require_dask_dataframe() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as error:
        raise ImportError(
            f"lazy_dataframe needs dask.dataframe, which is not installed: {INSTALL_HINT}  "
            f"(missing: {error.name or error})"
        ) from error
    return dd

