"""FrameReader on a real loopback TCP connection: a payload that trickles in is read whole,
and the reader never waits for bytes beyond the payload (the connection stays open)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest
from streams_testing import connected_pair

from asyncstrax.streams import protocol as P


def trickle(sock: socket.socket, data: bytes, pieces: int, pause: float) -> threading.Thread:
    def send() -> None:
        for part in np.array_split(np.frombuffer(data, np.uint8), pieces):
            sock.sendall(part.tobytes())
            time.sleep(pause)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.asyncio
@pytest.mark.parametrize("nbytes", [200_000, 3_000_000])
async def test_a_trickling_payload_is_read_whole_without_waiting_for_more(nbytes):
    sender, receiver = connected_pair()
    payload = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver)
        thread = trickle(sender, payload, pieces=7, pause=0.02)
        target = np.zeros(nbytes, np.uint8)
        # the sender keeps the connection open afterwards: a reader that waited for more
        # than the payload (a low-water mark above what is left) would hang here
        await asyncio.wait_for(reader.read_into(memoryview(target)), timeout=10)
        thread.join()
        assert target.tobytes() == payload
        assert reader.bytes_received == nbytes
    finally:
        sender.close()
        receiver.close()


@pytest.mark.asyncio
async def test_two_frames_back_to_back_keep_their_boundaries():
    sender, receiver = connected_pair()
    big = np.arange(400_000, dtype=np.int32)
    try:
        reader = P.FrameReader(asyncio.get_running_loop(), receiver)
        frames = b"".join(
            P.encode_frame(P.CHUNK, {"i": i}, big.nbytes) + big.tobytes() for i in range(2))
        thread = trickle(sender, frames, pieces=13, pause=0.005)
        for i in range(2):
            head = await asyncio.wait_for(reader.read_head(), timeout=10)
            assert head.header == {"i": i} and head.payload_len == big.nbytes
            out = np.empty_like(big)
            await asyncio.wait_for(reader.read_into(memoryview(out.view(np.uint8))), 10)
            np.testing.assert_array_equal(out, big)
        thread.join()
    finally:
        sender.close()
        receiver.close()
