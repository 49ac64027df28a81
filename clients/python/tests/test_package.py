"""The package itself: its version is the daemon's, it is typed, and it parses strictly."""

from __future__ import annotations

import base64
import importlib.metadata
import re
import struct
from pathlib import Path

import pytest

import rpi_streamer
from rpi_streamer import AudioChunk, H264Unit, ProtocolError, VideoFrame, parse_binary, parse_text

from conftest import REPO

JPEG = b"\xff\xd8\xff\xe0 a JPEG's bytes"
SPS = b"\0\0\0\1\x67\x42\xc0\x1f"  # a start code and the head of an SPS
START = b"\0\0\1"


def cargo_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert match, "no version in Cargo.toml"
    return match.group(1)


def test_the_version_is_the_daemons():
    assert rpi_streamer.__version__ == cargo_version()
    assert importlib.metadata.version("rpi-streamer-client") == cargo_version()


def test_the_installed_package_is_marked_typed():
    assert (Path(rpi_streamer.__file__).parent / "py.typed").is_file()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_well_formed_messages_of_both_framings_parse():
    assert parse_text(f"video:1795468548.538965:640:480:{b64(JPEG)}") == VideoFrame(
        1795468548.538965, 640, 480, JPEG, False
    )
    assert parse_text(f"audio:1795468548.5:{b64(bytes(8))}", (48000, 2)) == AudioChunk(
        1795468548.5, 48000, 2, bytes(8)
    )
    unit = parse_text(f"h264:1795468548.5:640:480:1:{b64(SPS)}")
    assert isinstance(unit, H264Unit) and unit.keyframe and unit.codec_string() == "avc1.42C01F"
    header = struct.pack("<BBHdHH", 1, 0b101, 0, 1795468548.5, 640, 480)  # bit 2: reserved
    assert parse_binary(header + JPEG) == VideoFrame(1795468548.5, 640, 480, JPEG, True)
    audio = struct.pack("<BBHdI", 2, 1, 0, 1795468548.5, 16000) + bytes(640)
    chunk = parse_binary(audio)
    assert chunk == AudioChunk(1795468548.5, 16000, 1, bytes(640)) and chunk.frames == 320
    h264 = struct.pack("<BBHdHH", 3, 2, 0, 1795468548.5, 64, 48) + b"\0\0\1\x65"
    assert parse_binary(h264) == H264Unit(1795468548.5, 64, 48, True, b"\0\0\1\x65", False)


@pytest.mark.parametrize(
    "message, complaint",
    [
        ("", "without a kind"),
        ("picture:1:2:3", "unknown text message kind"),
        ("video:1795468548.5:640:480", "3 fields, expected 4"),
        (f"video:soon:640:480:{b64(JPEG)}", "not a number"),
        (f"video:nan:640:480:{b64(JPEG)}", "not a positive UNIX time"),
        (f"video:1795468548.5:0:480:{b64(JPEG)}", "picture size"),
        (f"video:1795468548.5:-640:480:{b64(JPEG)}", "picture size"),
        ("video:1795468548.5:640:480:not base64!", "bad base64"),
        (f"video:1795468548.5:640:480:{b64(b'PNG')}", "not a JPEG"),
        (f"h264:1795468548.5:640:480:yes:{b64(START)}", "keyframe field"),
        (f"h264:1795468548.5:640:480:1:{b64(JPEG)}", "start code"),
        (f"audio:1795468548.5:{b64(bytes(3))}", "not whole s16le frames"),
    ],
)
def test_malformed_text_messages_are_refused_with_the_reason(message, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        parse_text(message, (48000, 1))


def test_text_audio_without_a_known_format_is_refused():
    with pytest.raises(ProtocolError, match="sample rate and channels are unknown"):
        parse_text(f"audio:1795468548.5:{b64(bytes(4))}")


@pytest.mark.parametrize(
    "message, complaint",
    [
        (b"\1" * 15, "shorter than its header"),
        (struct.pack("<BBHdHH", 9, 0, 0, 1.5, 1, 1), "unknown binary message kind 9"),
        (struct.pack("<BBHdHH", 1, 0, 0, 1.5, 640, 480) + b"GIF89a", "not a JPEG"),
        (struct.pack("<BBHdHH", 1, 0, 0, -1.0, 640, 480) + JPEG, "not a positive UNIX time"),
        (struct.pack("<BBHdHH", 1, 0, 0, 1.5, 0, 480) + JPEG, "size 0x480"),
        (struct.pack("<BBHdI", 2, 0, 0, 1.5, 48000) + bytes(4), "channel count 0"),
        (struct.pack("<BBHdI", 2, 2, 0, 1.5, 0) + bytes(4), "sample rate 0"),
        (struct.pack("<BBHdI", 2, 2, 0, 1.5, 48000) + bytes(6), "not whole s16le frames"),
    ],
)
def test_malformed_binary_messages_are_refused_with_the_reason(message, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        parse_binary(message)
