"""asyncstrax: strax's streaming analysis of time-stamped detector data, on asyncio.

The layers, bottom up: ``chunk`` (the data model and its rules) and ``errors`` (every error, in
one tree); ``options`` and ``plugins`` (what a plugin declares); ``lineage`` and ``graph`` (what
data is made of, and configured plugins for a request); ``runtime`` (channels, input
synchronization, compute offload, the pipeline); ``storage`` (strax-compatible files); and the
``Context``, the front door that wires them together. Every public name is re-exported here,
once; anything not in ``__all__`` is internal.
"""

from .chunk import Chunk, endtime, split_array
from .context import Context
from .dtypes import (
    hit_dtype,
    interval_dtype,
    peak_dtype,
    raw_record_dtype,
    record_dtype,
    time_dt_fields,
    time_fields,
)
from .errors import (
    AsyncstraxError,
    CannotSplit,
    ChunkBoundaryError,
    ChunkBoundsError,
    ChunkContinuityError,
    ChunkDtypeError,
    ChunkError,
    ChunkMergeError,
    ChunkSortError,
    ContextClosed,
    DataCorrupted,
    DataExistsError,
    DataNotAvailable,
    EventLoopError,
    InvalidConfiguration,
    PluginError,
    PluginGaveWrongOutput,
    RegistrationError,
    StorageError,
    StreamError,
)
from .helpers import (
    camel_to_snake,
    dict_to_rec,
    merge_arrs,
    merged_dtype,
    remove_titles_from_dtype,
    sort_by_time,
    stable_argsort,
    stable_sort,
    to_str_tuple,
    unpack_dtype,
)
from .lineage import DataKey, deterministic_hash
from .options import OMITTED, Config, Option, takes_config
from .plugins import (
    CutPlugin,
    DownChunkingPlugin,
    ExhaustPlugin,
    LoopPlugin,
    MergeOnlyPlugin,
    OverlapWindowPlugin,
    Plugin,
    SaveWhen,
)
from .plugins.loop import (
    fully_contained_in,
    split_by_containment,
    split_touching_windows,
    touching_windows,
)
from .query import add_run_id_field, apply_selection
from .runtime import Channel, DeadlockError, Pipeline, PipelineSummary
from .storage import FileStore
from .strax_compat import RunMetadataNotAvailable, exporter
from .streams import (
    Gap,
    Publisher,
    PublisherStatistics,
    StreamInfo,
    Subscriber,
    SubscriberStatistics,
    publish,
    stream_info,
    subscriber_plugin,
)

#: strax's name for a folder of stored data
DataDirectory = FileStore

__version__ = "0.1.0"


def __getattr__(name: str):
    """``asyncstrax.tpc`` on first use: it loads numba kernels, which plain imports skip."""
    if name == "tpc":
        import importlib

        return importlib.import_module(".tpc", __name__)
    raise AttributeError(f"module 'asyncstrax' has no attribute {name!r}")

__all__ = [
    "AsyncstraxError",
    "CannotSplit",
    "Channel",
    "Chunk",
    "ChunkBoundaryError",
    "ChunkBoundsError",
    "ChunkContinuityError",
    "ChunkDtypeError",
    "ChunkError",
    "ChunkMergeError",
    "ChunkSortError",
    "Config",
    "Context",
    "ContextClosed",
    "CutPlugin",
    "DataCorrupted",
    "DataDirectory",
    "DataExistsError",
    "DataKey",
    "DataNotAvailable",
    "DeadlockError",
    "DownChunkingPlugin",
    "EventLoopError",
    "ExhaustPlugin",
    "FileStore",
    "Gap",
    "InvalidConfiguration",
    "LoopPlugin",
    "MergeOnlyPlugin",
    "OMITTED",
    "Option",
    "OverlapWindowPlugin",
    "Pipeline",
    "PipelineSummary",
    "Plugin",
    "PluginError",
    "PluginGaveWrongOutput",
    "Publisher",
    "PublisherStatistics",
    "RegistrationError",
    "RunMetadataNotAvailable",
    "SaveWhen",
    "StorageError",
    "StreamError",
    "StreamInfo",
    "Subscriber",
    "SubscriberStatistics",
    "add_run_id_field",
    "apply_selection",
    "camel_to_snake",
    "deterministic_hash",
    "dict_to_rec",
    "endtime",
    "exporter",
    "fully_contained_in",
    "hit_dtype",
    "interval_dtype",
    "merge_arrs",
    "merged_dtype",
    "peak_dtype",
    "publish",
    "raw_record_dtype",
    "record_dtype",
    "remove_titles_from_dtype",
    "sort_by_time",
    "split_array",
    "split_by_containment",
    "split_touching_windows",
    "stable_argsort",
    "stable_sort",
    "stream_info",
    "subscriber_plugin",
    "takes_config",
    "time_dt_fields",
    "time_fields",
    "to_str_tuple",
    "touching_windows",
    "unpack_dtype",
]
