"""The stream's messages as Python objects, and their strict parsers.

Two framings carry the same three kinds of message (docs/client.md in the daemon's
repository is the reference):

- text: ``video:<ts>:<w>:<h>:<base64 JPEG>``, ``audio:<ts>:<base64 PCM s16le>`` and
  ``h264:<ts>:<w>:<h>:<key>:<base64 Annex-B>``;
- binary (``?format=binary``): a 16-byte little-endian header (kind, flags or channels, two
  zero bytes, f64 timestamp, u16 width + u16 height or u32 sample rate), then the raw payload.

Text audio does not say its sample rate or channel count: the daemon reports them in
``/status`` (``audio.sample_rate``, ``audio.channels``), and :func:`parse_text` takes them
as an argument.

Anything that does not follow the format raises :class:`ProtocolError` naming what is wrong.
"""

from __future__ import annotations

import array
import base64
import binascii
import io
import math
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

if TYPE_CHECKING:  # the optional extras: only needed by the helpers that use them
    import numpy
    import PIL.Image

__all__ = [
    "AudioChunk",
    "H264Unit",
    "Message",
    "ProtocolError",
    "VideoFrame",
    "parse_binary",
    "parse_message",
    "parse_text",
]

KIND_VIDEO = 1
KIND_AUDIO = 2
KIND_H264 = 3
FLAG_PLACEHOLDER = 1
FLAG_KEYFRAME = 2
HEADER = struct.Struct("<BBHdHH")  # kind, flags, reserved, ts, width, height
AUDIO_HEADER = struct.Struct("<BBHdI")  # kind, channels, reserved, ts, rate
JPEG_SOI = b"\xff\xd8"


class ProtocolError(ValueError):
    """A message that does not follow the stream's wire format."""


@dataclass(frozen=True)
class VideoFrame:
    """One JPEG picture from the camera."""

    ts: float
    """Capture time, UNIX seconds (the daemon's capture clock, microsecond digits)."""
    width: int
    """Width in pixels, as the daemon announced it."""
    height: int
    """Height in pixels."""
    jpeg: bytes = b""
    """The JPEG file, exactly as the daemon encoded (or the camera sent) it."""
    placeholder: bool = False
    """True for the daemon's "NO SIGNAL" picture (camera missing). Only binary framing says
    so; with text framing this is always False."""

    def __repr__(self) -> str:
        return (
            f"VideoFrame(ts={self.ts:.6f}, width={self.width}, height={self.height}, "
            f"jpeg=<{len(self.jpeg)} bytes>, placeholder={self.placeholder})"
        )

    def to_image(self) -> "PIL.Image.Image":
        """The decoded picture as a Pillow image (needs the ``pillow`` extra)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.jpeg))
        image.load()
        return image

    def to_array(self) -> "numpy.ndarray":
        """The decoded picture as a ``(height, width, 3)`` uint8 RGB array (needs the
        ``numpy`` and ``pillow`` extras). OpenCV wants BGR: ``frame.to_array()[:, :, ::-1]``,
        or decode with ``cv2.imdecode`` directly."""
        import numpy

        return numpy.asarray(self.to_image().convert("RGB"))


@dataclass(frozen=True)
class H264Unit:
    """One H.264 access unit (one picture), Annex-B, as encoded by the daemon
    (``video="h264"``). Concatenating the units' ``data`` from the first keyframe on gives an
    elementary stream that ffmpeg, VLC or PyAV decode."""

    ts: float
    """Capture time of the picture, UNIX seconds."""
    width: int
    """Width in pixels."""
    height: int
    """Height in pixels."""
    keyframe: bool
    """SPS + PPS + an IDR picture: a decoder can start here. A client's first unit is one."""
    data: bytes = b""
    """The access unit: NAL units behind ``00 00 00 01`` start codes."""
    placeholder: bool = False
    """The "NO SIGNAL" picture, encoded. Binary framing only; False with text framing."""

    def __repr__(self) -> str:
        return (
            f"H264Unit(ts={self.ts:.6f}, width={self.width}, height={self.height}, "
            f"keyframe={self.keyframe}, data=<{len(self.data)} bytes>, "
            f"placeholder={self.placeholder})"
        )

    def codec_string(self) -> Optional[str]:
        """The WebCodecs/RFC 6381 codec string (``avc1.42C01F``) from the unit's SPS, or None
        when it has none (only keyframes carry one)."""
        data = self.data
        i = data.find(b"\x00\x00\x01")
        while 0 <= i and i + 6 < len(data):
            if data[i + 3] & 0x1F == 7:
                return "avc1." + data[i + 4 : i + 7].hex().upper()
            i = data.find(b"\x00\x00\x01", i + 3)
        return None


@dataclass(frozen=True)
class AudioChunk:
    """A run of PCM samples from the microphone (20 ms with the daemon's sources)."""

    ts: float
    """Capture time of the first sample, UNIX seconds, on the same clock as the video."""
    rate: int
    """Samples per second per channel."""
    channels: int
    """1 (mono) or 2; samples are interleaved."""
    pcm: bytes = b""
    """Signed 16-bit little-endian samples, interleaved."""

    def __repr__(self) -> str:
        return (
            f"AudioChunk(ts={self.ts:.6f}, rate={self.rate}, channels={self.channels}, "
            f"pcm=<{len(self.pcm)} bytes>)"
        )

    @property
    def frames(self) -> int:
        """Samples per channel in this chunk."""
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate

    def samples(self) -> "array.array[int]":
        """The interleaved samples as an ``array('h')`` (no extra needed)."""
        samples = array.array("h")
        samples.frombytes(self.pcm)
        if sys.byteorder == "big":
            samples.byteswap()
        return samples

    def to_array(self) -> "numpy.ndarray":
        """The samples as a ``(frames, channels)`` int16 array (needs the ``numpy`` extra)."""
        import numpy

        return numpy.frombuffer(self.pcm, dtype="<i2").astype(numpy.int16).reshape(
            -1, self.channels
        )


Message = Union[VideoFrame, AudioChunk, H264Unit]
"""Anything the stream yields."""

AudioFormat = Tuple[int, int]
"""(sample rate, channels)."""


def parse_message(
    message: Union[str, bytes, bytearray, memoryview], audio_format: Optional[AudioFormat]
) -> Message:
    """Parses one WebSocket message of either framing: text (``str``) or binary (bytes).

    ``audio_format`` is ``(rate, channels)`` for text audio (see :func:`parse_text`)."""
    if isinstance(message, str):
        return parse_text(message, audio_format)
    return parse_binary(bytes(message))


def parse_text(message: str, audio_format: Optional[AudioFormat] = None) -> Message:
    """Parses a text message: ``video:``, ``audio:`` or ``h264:``.

    Text audio carries no rate or channel count: ``audio_format`` gives them (``/status``
    reports them); an audio message without it raises :class:`ProtocolError`."""
    kind, sep, rest = message.partition(":")
    if not sep:
        raise ProtocolError(f"text message without a kind: {_clip(message)!r}")
    if kind == "video":
        fields = rest.split(":", 3)
        _expect_fields("video", fields, 4)
        ts, width, height = _ts(fields[0]), _size(fields[1]), _size(fields[2])
        return VideoFrame(ts, width, height, _jpeg(_base64(fields[3], "video")), False)
    if kind == "h264":
        fields = rest.split(":", 4)
        _expect_fields("h264", fields, 5)
        ts, width, height = _ts(fields[0]), _size(fields[1]), _size(fields[2])
        if fields[3] not in ("0", "1"):
            raise ProtocolError(f"h264 message: keyframe field {_clip(fields[3])!r} is not 0 or 1")
        data = _base64(fields[4], "h264")
        return H264Unit(ts, width, height, fields[3] == "1", _annex_b(data), False)
    if kind == "audio":
        fields = rest.split(":", 1)
        _expect_fields("audio", fields, 2)
        ts = _ts(fields[0])
        if audio_format is None:
            raise ProtocolError(
                "text audio message but its sample rate and channels are unknown "
                "(the daemon's /status has no audio format; pass audio_format=(rate, channels))"
            )
        rate, channels = audio_format
        return _audio(ts, rate, channels, _base64(fields[1], "audio"))
    raise ProtocolError(f"unknown text message kind {_clip(kind)!r}")


def parse_binary(message: bytes) -> Message:
    """Parses a binary message: kind 1 (JPEG), 2 (audio) or 3 (H.264)."""
    if len(message) < HEADER.size:
        raise ProtocolError(f"binary message of {len(message)} bytes, shorter than its header")
    kind = message[0]
    payload = message[HEADER.size :]
    if kind == KIND_AUDIO:
        _, channels, _, ts, rate = AUDIO_HEADER.unpack_from(message)
        return _audio(_finite_ts(ts), rate, channels, payload)
    if kind in (KIND_VIDEO, KIND_H264):
        _, flags, _, ts, width, height = HEADER.unpack_from(message)
        ts = _finite_ts(ts)
        if width == 0 or height == 0:
            raise ProtocolError(f"binary video message with size {width}x{height}")
        placeholder = bool(flags & FLAG_PLACEHOLDER)  # other bits are reserved: ignored
        if kind == KIND_VIDEO:
            return VideoFrame(ts, width, height, _jpeg(payload), placeholder)
        keyframe = bool(flags & FLAG_KEYFRAME)
        return H264Unit(ts, width, height, keyframe, _annex_b(payload), placeholder)
    raise ProtocolError(f"unknown binary message kind {kind}")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _expect_fields(kind: str, fields: List[str], count: int) -> None:
    if len(fields) != count:
        raise ProtocolError(f"{kind} message with {len(fields)} fields, expected {count}")


def _ts(field: str) -> float:
    try:
        ts = float(field)
    except ValueError:
        raise ProtocolError(f"timestamp {_clip(field)!r} is not a number") from None
    return _finite_ts(ts)


def _finite_ts(ts: float) -> float:
    if not math.isfinite(ts) or ts <= 0:
        raise ProtocolError(f"timestamp {ts!r} is not a positive UNIX time")
    return ts


def _size(field: str) -> int:
    if not (field.isascii() and field.isdigit()) or not 0 < int(field) <= 65535:
        raise ProtocolError(f"picture size {_clip(field)!r} is not a number of pixels 1-65535")
    return int(field)


def _base64(field: str, kind: str) -> bytes:
    try:
        return base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError(f"{kind} message: bad base64 payload ({e})") from None


def _jpeg(data: bytes) -> bytes:
    if not data.startswith(JPEG_SOI):
        raise ProtocolError(f"video payload of {len(data)} bytes is not a JPEG (no SOI marker)")
    return data


def _annex_b(data: bytes) -> bytes:
    if not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
        raise ProtocolError(f"h264 payload of {len(data)} bytes does not start with a start code")
    return data


def _audio(ts: float, rate: int, channels: int, pcm: bytes) -> AudioChunk:
    if not 1 <= rate <= 1_000_000:
        raise ProtocolError(f"audio sample rate {rate} is out of range")
    if channels not in range(1, 33):
        raise ProtocolError(f"audio channel count {channels} is out of range")
    if len(pcm) % (2 * channels):
        raise ProtocolError(
            f"audio payload of {len(pcm)} bytes is not whole s16le frames of {channels} channels"
        )
    return AudioChunk(ts, rate, channels, pcm)
