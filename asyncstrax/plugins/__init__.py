"""Plugins: the base class and its family (strax's plugin types)."""

from ..helpers import camel_to_snake
from .base import Plugin, SaveWhen, Work
from .cut import CutPlugin
from .down_chunking import DownChunkingPlugin
from .exhaust import ExhaustPlugin
from .loop import ItemGroups, LoopPlugin
from .merge_only import MergeOnlyPlugin
from .overlap_window import OverlapWindowPlugin

__all__ = [
    "CutPlugin",
    "DownChunkingPlugin",
    "ExhaustPlugin",
    "ItemGroups",
    "LoopPlugin",
    "MergeOnlyPlugin",
    "OverlapWindowPlugin",
    "Plugin",
    "SaveWhen",
    "Work",
    "camel_to_snake",
]
