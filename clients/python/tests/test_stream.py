"""The package against the real daemon on the synthetic source: framings, decoding, audio,
H.264, asyncio, reconnection and authentication."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy
import pytest
from helpers import collect

from rpi_streamer import (
    AsyncStream,
    AudioChunk,
    AuthError,
    Backoff,
    ConnectError,
    H264Unit,
    Stream,
    VideoFrame,
)

from conftest import FPS, free_port

QUICK = Backoff(initial=0.1, maximum=0.5, attempts=40)  # ≈ 20 s of attempts at most


@pytest.mark.parametrize("framing", ["binary", "text"])
def test_frames_decode_with_their_announced_size_and_increasing_timestamps(av_daemon, framing):
    with Stream(av_daemon.address, format=framing) as stream:
        frames = collect(stream, VideoFrame, 8)
    assert len(frames) == 8
    for frame in frames:
        image = frame.to_image()
        assert image.format == "JPEG"
        assert image.size == (frame.width, frame.height) == (320, 240)
        assert not frame.placeholder
    pixels = frames[-1].to_array()
    assert pixels.shape == (240, 320, 3) and pixels.dtype == numpy.uint8
    stamps = [f.ts for f in frames]
    assert stamps == sorted(set(stamps)), stamps
    # The capture clock is UNIX time: this machine's clock, give or take a few seconds.
    assert abs(stamps[-1] - time.time()) < 30
    # Frames after the first (which may be an older, newest-so-far frame) keep the grid.
    spacing = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
    assert 0.5 / FPS < spacing < 3.0 / FPS, spacing


@pytest.mark.parametrize("framing", ["binary", "text"])
def test_audio_sample_counts_match_the_rate_in_both_framings(start_daemon, framing):
    # Not the default 48 kHz mono: the text client must really learn the format (/status).
    daemon = start_daemon("--enable-audio", "--audio-samplerate", "16000", "--audio-channels", "2")
    with Stream(daemon.address, format=framing) as stream:
        chunks = collect(stream, AudioChunk, 50)
    assert len(chunks) == 50
    assert {(c.rate, c.channels) for c in chunks} == {(16000, 2)}
    for chunk in chunks:
        assert chunk.frames == 320  # 20 ms at 16 kHz
        assert len(chunk.pcm) == 320 * 2 * 2
        samples = chunk.to_array()
        assert samples.shape == (320, 2) and samples.dtype == numpy.int16
        assert len(chunk.samples()) == 640
    # Each chunk starts where the previous one ended: frames / rate apart on the capture clock.
    for before, after in zip(chunks, chunks[1:]):
        assert after.ts - before.ts == pytest.approx(before.duration, abs=2e-3)
    # The synthetic tone is there, loud, on both channels.
    tone = numpy.concatenate([c.to_array() for c in chunks[5:]])
    assert numpy.abs(tone).max(axis=0).min() > 1000


@pytest.mark.parametrize("framing", ["binary", "text"])
def test_h264_arrives_as_access_units_from_a_keyframe(av_daemon, framing):
    with Stream(av_daemon.address, format=framing, video="h264") as stream:
        units = collect(stream, H264Unit, 10)
    assert len(units) == 10
    first = units[0]
    assert first.keyframe
    assert first.codec_string() is not None and first.codec_string().startswith("avc1.42")
    assert (first.width, first.height) == (320, 240)
    assert all(u.data.startswith((b"\0\0\0\1", b"\0\0\1")) for u in units)
    stamps = [u.ts for u in units]
    assert stamps == sorted(set(stamps))


def test_the_asyncio_api_yields_frames_and_audio(av_daemon):
    async def read():
        frames, chunks = [], []
        async with AsyncStream(av_daemon.address, format="text") as stream:
            async def gather():
                async for message in stream:
                    (frames if isinstance(message, VideoFrame) else chunks).append(message)
                    if len(frames) >= 5 and len(chunks) >= 5:
                        return
            await asyncio.wait_for(gather(), 20)
        return frames, chunks

    frames, chunks = asyncio.run(read())
    assert frames[-1].to_image().size == (320, 240)
    assert chunks[-1].rate == 48000 and chunks[-1].channels == 1
    assert [f.ts for f in frames] == sorted(f.ts for f in frames)


def test_the_stream_comes_back_after_a_daemon_restart(start_daemon):
    daemon = start_daemon()

    def restart_at(i):
        if i == 5:
            daemon.stop()
            threading.Timer(0.5, daemon.start).start()

    for framing in ("binary", "text"):
        with Stream(daemon.address, format=framing, backoff=QUICK) as stream:
            frames = collect(stream, VideoFrame, 15, timeout=30, each=restart_at)
            assert len(frames) == 15, daemon.log_text()
            assert stream.connections == 2
        time.sleep(1)  # the restart timer has run


def test_asyncio_reconnects_too(start_daemon):
    daemon = start_daemon()

    async def read():
        frames = []
        async with AsyncStream(daemon.address, backoff=QUICK) as stream:
            async def gather():
                async for frame in stream.frames():
                    frames.append(frame)
                    if len(frames) == 3:
                        await asyncio.to_thread(daemon.stop)
                        threading.Timer(0.5, daemon.start).start()
                    if len(frames) == 8:
                        return
            await asyncio.wait_for(gather(), 30)
            return frames, stream.connections

    frames, connections = asyncio.run(read())
    assert len(frames) == 8 and connections == 2


def test_without_reconnect_the_iteration_ends_with_the_connection(start_daemon):
    daemon = start_daemon()
    with Stream(daemon.address, reconnect=False) as stream:
        frames = collect(
            stream, VideoFrame, 1000, timeout=20, each=lambda i: i == 3 and daemon.stop()
        )
    assert 3 <= len(frames) < 1000


def test_reconnection_gives_up_after_its_attempts():
    started = time.monotonic()
    with pytest.raises(ConnectError, match="after 3 attempt"):
        with Stream(f"127.0.0.1:{free_port()}", backoff=Backoff(initial=0.05, attempts=3)) as s:
            next(iter(s))
    assert time.monotonic() - started < 10


TOKEN = "a-test-token-1234"


def test_a_token_is_needed_and_accepted(start_daemon):
    daemon = start_daemon("--enable-audio", env={"RPI_STREAMER_AUTH_TOKEN": TOKEN})
    for credentials in ({}, {"token": "wrong-token-0000"}, {"basic_auth": "user:pass"}):
        with pytest.raises(AuthError, match="401"):
            with Stream(daemon.address, **credentials) as stream:
                next(iter(stream))
    # Text framing: the token also opens /status, where text audio's format is.
    with Stream(daemon.address, format="text", token=TOKEN) as stream:
        assert collect(stream, VideoFrame, 2)
        chunk = collect(stream, AudioChunk, 1)[0]
    assert (chunk.rate, chunk.channels) == (48000, 1)


def test_basic_auth_is_needed_and_accepted(start_daemon):
    daemon = start_daemon(env={"RPI_STREAMER_BASIC_AUTH": "viewer:s3cret"})
    for credentials in ({}, {"basic_auth": "viewer:wrong"}, {"token": "s3cret-but-a-token"}):
        with pytest.raises(AuthError):
            with Stream(daemon.address, **credentials) as stream:
                next(iter(stream))
    for basic in ("viewer:s3cret", ("viewer", "s3cret")):
        with Stream(daemon.address, basic_auth=basic) as stream:
            assert len(collect(stream, VideoFrame, 2)) == 2
