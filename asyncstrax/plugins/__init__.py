"""Plugins: the base class and its family (strax's plugin types)."""

from .base import Plugin, SaveWhen, Work, camel_to_snake

__all__ = ["Plugin", "SaveWhen", "Work", "camel_to_snake"]
