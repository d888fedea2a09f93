"""Damaged data is a clear error; failed or racing writes never look complete."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import zlib

import numpy as np
import pytest
from storage_testing import (
    ENDTIME_DTYPE,
    StubPlugin,
    assert_same_chunks,
    load_chunks,
    make_chunks,
    save_chunks,
)

from asyncstrax.errors import DataCorrupted, DataNotAvailable, StorageError
from asyncstrax.storage import FileStore, files, list_stored, tempdirs


async def saved(tmp_path, n_chunks=4, **plugin_kwargs):
    rng = np.random.default_rng(0)
    chunks = make_chunks(ENDTIME_DTYPE, list(range(0, 1000 * n_chunks + 1, 1000)),
                         [50] * n_chunks, rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE, **plugin_kwargs)
    await save_chunks(store, plugin.key(), plugin, chunks)
    return store, plugin, chunks


def chunk_path(store, plugin, i):
    key = plugin.key()
    return os.path.join(store.folder(key), f"things-{key.lineage_hash}-{i:06d}")


def md_path(store, plugin):
    key = plugin.key()
    return os.path.join(store.folder(key), f"things-{key.lineage_hash}-metadata.json")


def edit_metadata(store, plugin, edit):
    """Rewrite the saved metadata with ``edit(md)`` applied (a damaged or older folder)."""
    with open(md_path(store, plugin)) as f:
        md = json.load(f)
    edit(md)
    with open(md_path(store, plugin), "w") as f:
        json.dump(md, f)


# ---------------------------------------------------------------------------- corruption
@pytest.mark.asyncio
async def test_truncated_chunk_file(tmp_path):
    store, plugin, _ = await saved(tmp_path)
    path = chunk_path(store, plugin, 2)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DataCorrupted) as info:
        await load_chunks(store, plugin.key(), plugin)
    assert path in str(info.value) and info.value.chunk_i == 2
    assert "chunk 2" in str(info.value)


@pytest.mark.asyncio
async def test_truncated_chunk_file_without_filesize(tmp_path):
    """strax does not always record filesize: the lz4 frame itself catches the truncation."""
    store, plugin, _ = await saved(tmp_path)
    edit_metadata(store, plugin, lambda md: [c.pop("filesize", None) for c in md["chunks"]])
    path = chunk_path(store, plugin, 1)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 7)
    with pytest.raises(DataCorrupted) as info:
        await load_chunks(store, plugin.key(), plugin)
    assert path in str(info.value) and info.value.chunk_i == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["middle", "end"])
async def test_flipped_bytes_fail_the_checksum(tmp_path, where):
    store, plugin, _ = await saved(tmp_path)
    path = chunk_path(store, plugin, 1)
    raw = bytearray(open(path, "rb").read())
    i = len(raw) // 2 if where == "middle" else len(raw) - 6
    raw[i] ^= 0x5A
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DataCorrupted) as info:
        await load_chunks(store, plugin.key(), plugin)
    assert path in str(info.value) and info.value.chunk_i == 1
    assert "fails its XXH3-64 check" in str(info.value)


@pytest.mark.asyncio
async def test_crc32_of_files_written_before_xxh3_is_still_checked(tmp_path):
    store, plugin, chunks = await saved(tmp_path)

    def to_crc32(md):
        for c in md["chunks"]:
            if c.pop("xxh3_64", None) is not None:
                c["crc32"] = zlib.crc32(open(chunk_path(store, plugin, c["chunk_i"]),
                                             "rb").read())

    edit_metadata(store, plugin, to_crc32)
    assert_same_chunks(await load_chunks(store, plugin.key(), plugin), chunks)
    path = chunk_path(store, plugin, 2)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x01
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DataCorrupted, match="fails its CRC-32 check") as info:
        await load_chunks(store, plugin.key(), plugin)
    assert info.value.chunk_i == 2


@pytest.mark.asyncio
async def test_missing_chunk_file(tmp_path):
    store, plugin, _ = await saved(tmp_path)
    path = chunk_path(store, plugin, 3)
    os.unlink(path)
    assert store.find(plugin.key())  # find is a quick check of the metadata only
    with pytest.raises(DataCorrupted) as info:
        await load_chunks(store, plugin.key(), plugin)
    assert path in str(info.value) and "missing" in str(info.value)
    assert info.value.chunk_i == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '{"chunks": 5}'])
async def test_bad_metadata(tmp_path, content):
    store, plugin, _ = await saved(tmp_path)
    open(md_path(store, plugin), "w").write(content)
    with pytest.raises(DataCorrupted) as info:
        store.find(plugin.key())
    assert md_path(store, plugin) in str(info.value)
    with pytest.raises(DataCorrupted):
        store.get_metadata(plugin.key())


@pytest.mark.asyncio
@pytest.mark.parametrize("edit, words", [
    (lambda md: md.update(compressor="snappy"), "unknown compressor 'snappy'"),
    (lambda md: md.update(dtype="[('time', 'no such type')]"), "no usable dtype"),
    (lambda md: md.update(chunks="all of them"), "does not hold strax metadata"),
    (lambda md: md["chunks"].__setitem__(1, "all of them"), "lacks start, end or n"),
    (lambda md: md["chunks"][1].update(filename="../../outside"), "not in the folder"),
    (lambda md: md["chunks"][1].update(filename=".."), "not in the folder"),
])
async def test_bad_metadata_fields_name_data_type_and_run(tmp_path, edit, words):
    store, plugin, _ = await saved(tmp_path)
    edit_metadata(store, plugin, edit)
    with pytest.raises(StorageError) as info:
        await load_chunks(store, plugin.key(), plugin)
    assert words in str(info.value)
    assert info.value.data_type == "things" and info.value.run_id == plugin.key().run_id


@pytest.mark.asyncio
async def test_missing_metadata(tmp_path):
    store, plugin, _ = await saved(tmp_path)
    os.unlink(md_path(store, plugin))
    with pytest.raises(DataCorrupted, match="no metadata"):
        store.find(plugin.key())


@pytest.mark.asyncio
async def test_metadata_disagreeing_with_file(tmp_path):
    store, plugin, _ = await saved(tmp_path)

    def miscount(md):
        md["chunks"][0]["n"] += 1
        md["chunks"][0].pop("filesize")

    edit_metadata(store, plugin, miscount)
    with pytest.raises(DataCorrupted, match="items of"):
        await load_chunks(store, plugin.key(), plugin)


@pytest.mark.asyncio
async def test_changed_dtype_is_reported(tmp_path):
    store, plugin, _ = await saved(tmp_path)
    other = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("area", "<f8")])
    with pytest.raises(DataCorrupted, match="dtype"):
        store.loader(plugin.key(), data_kind="things", dtype=other)


# ---------------------------------------------------------------------------- unwritable
@pytest.mark.asyncio
async def test_readonly_store_never_writes(tmp_path):
    store, plugin, chunks = await saved(tmp_path / "data")
    before = sorted(os.walk(tmp_path))
    ro = FileStore(tmp_path / "data", readonly=True)
    assert ro.find(plugin.key())
    assert_same_chunks(chunks, await load_chunks(ro, plugin.key(), plugin))
    with pytest.raises(StorageError, match="read-only"):
        ro.saver(StubPlugin("other", ENDTIME_DTYPE).key(), plugin=plugin)
    with pytest.raises(StorageError):
        ro.write_run_metadata("run0", {})
    FileStore(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()
    assert sorted(os.walk(tmp_path)) == before


def test_unwritable_path_is_a_storage_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    store = FileStore(tmp_path / "a_file" / "store")
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    with pytest.raises(StorageError, match="cannot save to"):
        store.saver(plugin.key(), plugin=plugin)


def test_a_store_on_a_file_is_refused_when_made(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        FileStore(tmp_path / "a_file")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        FileStore(tmp_path / "a_file", readonly=True)
    assert (tmp_path / "a_file").read_text() == "x"


def test_process_command_refuses_a_storage_file_before_any_cluster(tmp_path, capsys):
    from asyncstrax.cli import main

    (tmp_path / "a_file").write_text("x")
    code = main(["process", "r1", "--target", "records", "--storage",
                 str(tmp_path / "a_file"), "--plugins", "asyncstrax.tpc.plugins"])
    assert code == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("run_id", ["../escaped", "/abs/path", "a/b"])
def test_a_run_id_that_is_a_path_is_refused(tmp_path, run_id):
    store = FileStore(tmp_path / "store")
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    with pytest.raises(StorageError, match="path separator"):
        store.saver(plugin.key(run_id), plugin=plugin)
    assert os.listdir(tmp_path) in ([], ["store"])  # nothing written, inside or outside
    assert not os.path.exists(tmp_path / "store") or not os.listdir(tmp_path / "store")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_permission_denied_is_a_storage_error(tmp_path):
    tmp_path.chmod(0o555)
    try:
        store = FileStore(tmp_path)
        plugin = StubPlugin("things", ENDTIME_DTYPE)
        with pytest.raises(StorageError, match="permission"):
            store.saver(plugin.key(), plugin=plugin)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.asyncio
async def test_full_disk_is_a_storage_error_and_leaves_incomplete_data(tmp_path, monkeypatch):
    real_open = open
    calls = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        if mode == "xb":
            calls.append(path)
            if path.endswith("000001"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_disk_open, raising=False)
    with pytest.raises(StorageError, match="disk is full") as info:
        await saved(tmp_path)
    assert info.value.chunk_i == 1
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    assert not store.find(plugin.key())
    (row,) = list_stored(tmp_path)
    assert row["temporary"] and not row["complete"]
    assert "disk is full" in row["problem"]


# ---------------------------------------------------------------------------- abort
@pytest.mark.asyncio
async def test_abort_records_exception_and_never_renames(tmp_path):
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    rng = np.random.default_rng(0)
    chunks = make_chunks(ENDTIME_DTYPE, [0, 100, 200, 300], [5, 5, 5], rng)

    class Boom(Exception):
        pass

    async def failing():
        for c in chunks[:2]:
            yield c
        raise Boom("the plugin broke")

    from asyncstrax.runtime.channel import Channel
    from asyncstrax.runtime.offload import ThreadPool

    saver = store.saver(plugin.key(), plugin=plugin)
    channel = Channel("things")
    reader = channel.reader()
    pool = ThreadPool(2)
    task = asyncio.create_task(saver.consume(reader, pool))
    with pytest.raises(Boom):
        async for c in failing():
            await channel.put(c)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        raise Boom("the plugin broke")
    except Boom as error:
        await saver.abort(error)
    await pool.drain()
    pool.shutdown()
    assert not store.find(plugin.key())
    assert not os.path.exists(store.folder(plugin.key()))
    temp = store.folder(plugin.key()) + "_temp"
    md = json.load(open(os.path.join(temp, f"things-{plugin.key().lineage_hash}-metadata.json")))
    assert "Boom: the plugin broke" in md["exception"]
    assert "writing_ended" not in md
    # abort twice, or after its folder vanished, never raises
    import shutil

    shutil.rmtree(temp)
    await saver.abort(RuntimeError("again"))


@pytest.mark.asyncio
async def test_abort_before_anything_was_written(tmp_path):
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    saver = store.saver(plugin.key(), plugin=plugin)
    await saver.abort(RuntimeError("early"))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- existing data
@pytest.mark.asyncio
async def test_existing_complete_data_is_not_overwritten(tmp_path):
    store, plugin, chunks = await saved(tmp_path)
    path = chunk_path(store, plugin, 0)
    stamp = os.stat(path).st_mtime_ns
    rng = np.random.default_rng(99)
    other = make_chunks(ENDTIME_DTYPE, [0, 1000], [3], rng)
    saver = await save_chunks(store, plugin.key(), plugin, other)
    assert saver.outcome == "skipped"
    assert os.stat(path).st_mtime_ns == stamp
    assert_same_chunks(chunks, await load_chunks(store, plugin.key(), plugin))


@pytest.mark.asyncio
async def test_broken_final_folder_is_replaced(tmp_path):
    """strax renames failed writes to the final name with an exception: we redo them."""
    store, plugin, chunks = await saved(tmp_path)
    edit_metadata(store, plugin,
                  lambda md: md.update(exception="Traceback ...\nValueError: strax failed"))
    assert not store.find(plugin.key())
    with pytest.raises(DataNotAvailable, match="strax failed"):
        store.loader(plugin.key(), data_kind="things", dtype=ENDTIME_DTYPE)
    saver = await save_chunks(store, plugin.key(), plugin, chunks)
    assert saver.outcome == "saved"
    assert store.find(plugin.key())
    assert_same_chunks(chunks, await load_chunks(store, plugin.key(), plugin))
    assert [r["folder"] for r in list_stored(tmp_path)] == [store.folder(plugin.key())]


@pytest.mark.asyncio
async def test_a_failed_final_rename_leaves_no_folder_behind(tmp_path):
    """A file where the final folder goes: the rename fails at the very end, after the lock
    was let go; the temporary folder, complete but no writer's, used to stay for good."""
    rng = np.random.default_rng(0)
    chunks = make_chunks(ENDTIME_DTYPE, list(range(0, 4001, 1000)), [50] * 4, rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)

    async def file_in_the_way() -> None:  # appears while the saver writes
        await asyncio.sleep(0.05)
        with open(store.folder(plugin.key()), "w") as f:
            f.write("not a folder")

    with pytest.raises(StorageError,
                       match=r"cannot rename .* \(the data is not saved\): Not a directory"):
        await asyncio.gather(save_chunks(store, plugin.key(), plugin, chunks, delay=0.03),
                             file_in_the_way())
    assert os.listdir(tmp_path) == [os.path.basename(store.folder(plugin.key()))]
    os.remove(store.folder(plugin.key()))
    assert (await save_chunks(store, plugin.key(), plugin, chunks)).outcome == "saved"
    assert_same_chunks(chunks, await load_chunks(store, plugin.key(), plugin))


@pytest.mark.asyncio
async def test_two_concurrent_savers_of_one_key(tmp_path):
    rng = np.random.default_rng(0)
    chunks = make_chunks(ENDTIME_DTYPE, list(range(0, 10_001, 1000)), [50] * 10, rng)
    store = FileStore(tmp_path)
    plugin = StubPlugin("things", ENDTIME_DTYPE)
    a, b = await asyncio.gather(
        save_chunks(store, plugin.key(), plugin, chunks),
        save_chunks(store, plugin.key(), plugin, chunks),
    )
    assert sorted([a.outcome, b.outcome]) == ["lost", "saved"]
    assert a.folder.path != b.folder.path  # each wrote its own folder
    assert os.listdir(tmp_path) == [os.path.basename(store.folder(plugin.key()))]
    assert_same_chunks(chunks, await load_chunks(store, plugin.key(), plugin))


def test_live_writer_folder_is_not_taken_and_stale_one_is(tmp_path):
    final = str(tmp_path / "run0-things-abcdefghij")
    first = tempdirs.claim(final)
    assert first.path == final + "_temp"
    second = tempdirs.claim(final)  # the first writer is alive: a private folder
    assert second.path.startswith(final + "_temp_")
    assert tempdirs.remove_stale(final) == []
    first.release()  # as if the first writer died
    assert tempdirs.remove_stale(final) == [final + "_temp"]
    second.release()
    assert tempdirs.remove_stale(final) == [second.path]  # as a new saver does first
    third = tempdirs.claim(final)
    assert third.path == final + "_temp"
    assert sorted(os.listdir(tmp_path)) == ["run0-things-abcdefghij_temp"]
    third.release()


def test_foreign_temp_folder_is_left_alone(tmp_path):
    final = str(tmp_path / "run0-things-abcdefghij")
    os.mkdir(final + "_temp")  # strax's in-progress write: no lock file
    open(os.path.join(final + "_temp", "x"), "w").close()
    assert tempdirs.remove_stale(final) == []
    mine = tempdirs.claim(final)
    assert mine.path != final + "_temp" and os.path.exists(final + "_temp")
    mine.release()


@pytest.mark.asyncio
async def test_many_concurrent_savers_stress(tmp_path):
    rng = np.random.default_rng(1)
    chunks = make_chunks(ENDTIME_DTYPE, [0, 1000, 2000], [20, 20], rng)
    for round_i in range(15):
        store = FileStore(tmp_path / str(round_i))
        plugin = StubPlugin("things", ENDTIME_DTYPE)
        savers = await asyncio.gather(
            *[save_chunks(store, plugin.key(), plugin, chunks) for _ in range(5)])
        outcomes = sorted(s.outcome for s in savers)
        assert outcomes.count("saved") >= 1 and set(outcomes) <= {"saved", "lost"}
        assert os.listdir(store.path) == [os.path.basename(store.folder(plugin.key()))]
        assert_same_chunks(chunks, await load_chunks(store, plugin.key(), plugin))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0
                    or not __import__("shutil").which("setpriv"),
                    reason="needs root and setpriv to run a second writer as another user")
def test_stale_folder_of_another_user_in_a_shared_store(tmp_path):
    # A group shares a store (umask 002): a writer of user A was killed, then user B (same
    # group) saves the same data. Its lock file must not stop B judging the folder stale.
    import shutil
    import tempfile

    store = tempfile.mkdtemp(prefix="asx_shared_")  # pytest's tmp_path is private to root
    try:
        _stale_folder_of_another_user(store, tmp_path)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _stale_folder_of_another_user(store, cwd):
    import signal
    import subprocess
    import sys

    os.chmod(store, 0o777)
    final = os.path.join(store, "r-things-abcdefghij")
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom asyncstrax.storage import tempdirs\n"
         f"tempdirs.claim({final!r}); print('claimed', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, umask=0o002)
    assert writer.stdout.readline().strip() == "claimed"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    other = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=0", "--clear-groups", sys.executable, "-c",
         "from asyncstrax.storage import tempdirs\n"
         f"print(tempdirs.remove_stale({final!r}))\n"
         f"print(tempdirs.claim({final!r}).path)"],
        capture_output=True, text=True, umask=0o002, timeout=60, cwd=cwd)
    assert other.returncode == 0, other.stderr
    removed, claimed = other.stdout.strip().splitlines()
    assert removed == repr([final + tempdirs.TEMP_SUFFIX])
    assert claimed == final + tempdirs.TEMP_SUFFIX
