"""Storage: strax-compatible data folders, read and written without blocking the event loop.

- ``files``: ``FileStore`` (what the Context talks to), its loader and saver;
- ``metadata``: strax's folder and file names and metadata fields, in one place;
- ``codecs``: blosc (default), lz4, zstd, bz2 under strax's names;
- ``inline``: chunk files written by the fused chain that made them (no trip back first);
- ``rechunk``: merging small and splitting big chunks before they are written;
- ``tempdirs``: one temporary folder per writer, and telling a dead writer's from a live one's;
- ``listing``: ``list_stored(path)``, what a store holds (for ``asyncstrax ls``).
"""

from .codecs import available_codecs, get_codec
from .files import FileLoader, FileSaver, FileStore
from .listing import list_stored

__all__ = ["FileLoader", "FileSaver", "FileStore", "available_codecs", "get_codec", "list_stored"]
