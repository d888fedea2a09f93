"""Streams: a data type's chunks published to other processes and hosts (the pyacq seed).

- ``protocol``: the frame format (length-prefixed: fixed prefix, JSON header, raw payload);
- ``publisher``: ``Publisher`` (an output stream bound to an address), ``publish(chunks, pub)``;
- ``subscriber``: ``Subscriber`` (an input stream), ``subscriber_plugin(...)`` (a source plugin
  class built on it), ``stream_info``;
- ``sharedmem``: the shared-memory payload path on one host (segment pool, mappings, sweeps);
- ``live``: the ``asyncstrax digitizer`` and ``asyncstrax live`` commands.

Transports: ``tcp`` (bytes after each frame header, optionally lz4) and ``sharedmem`` (bytes in
a shared-memory segment, its name in the frame). Backpressure crosses the wire: a ``block``
subscriber's bounded buffer on the publisher makes ``publish`` wait; a ``drop`` subscriber
misses chunks instead and gets an empty chunk (a ``Gap``) over the missed time range.
"""

from .protocol import DEFAULT_MAX_FRAME_BYTES, parse_address
from .publisher import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_DROP_END_TIMEOUT,
    Publisher,
    PublisherStatistics,
    PublishingConsumer,
    SubscriptionStatistics,
    publish,
)
from .subscriber import (
    Gap,
    StreamInfo,
    Subscriber,
    SubscriberStatistics,
    stream_info,
    subscriber_plugin,
)

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "DEFAULT_DROP_END_TIMEOUT",
    "DEFAULT_MAX_FRAME_BYTES",
    "Gap",
    "Publisher",
    "PublisherStatistics",
    "PublishingConsumer",
    "StreamInfo",
    "Subscriber",
    "SubscriberStatistics",
    "SubscriptionStatistics",
    "parse_address",
    "publish",
    "stream_info",
    "subscriber_plugin",
]
