"""The async runtime: channels, input synchronization, compute offload and the pipeline."""

from .channel import Channel, ChannelReader, ChannelStatistics, DeadlockError, StallMonitor
from .pipeline import Pipeline, PipelineSummary
from .sync import InputSync

__all__ = [
    "Channel",
    "ChannelReader",
    "ChannelStatistics",
    "DeadlockError",
    "InputSync",
    "Pipeline",
    "PipelineSummary",
    "StallMonitor",
]
