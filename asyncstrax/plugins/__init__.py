"""Plugins: the base class and its family (strax's plugin types)."""

from .base import Plugin, SaveWhen, Work, camel_to_snake
from .overlap_window import OverlapWindowPlugin

__all__ = ["OverlapWindowPlugin", "Plugin", "SaveWhen", "Work", "camel_to_snake"]
