"""Read rpi-streamer's camera and microphone stream from Python.

The daemon sends every video frame and audio chunk over one WebSocket (``/stream``), each
stamped with its capture time (UNIX seconds, the capture clock). This package connects to
it, parses either framing strictly and yields typed messages::

    from rpi_streamer import Stream

    with Stream("raspberrypi.local:8080") as stream:
        for frame in stream.frames():
            print(frame.ts, frame.width, frame.height, len(frame.jpeg))

- :class:`Stream` (blocking) and :class:`AsyncStream` (asyncio) connect, authenticate
  (``token=``, ``basic_auth=``) and reconnect with a bounded :class:`Backoff`.
- :class:`VideoFrame` (a JPEG), :class:`H264Unit` (an Annex-B access unit, with
  ``video="h264"``) and :class:`AudioChunk` (PCM s16le) are what they yield;
  ``frame.to_array()`` / ``chunk.to_array()`` decode them to numpy arrays (extras
  ``numpy`` and ``pillow``).
- :class:`CameraControls` lists the camera's controls and changes them live
  (``/controls``).
- ``python -m rpi_streamer.record`` records a stream to a folder;
  ``python -m rpi_streamer.stats`` prints live fps and latency.
"""

from .client import AsyncStream, AuthError, Backoff, ConnectError, Stream, StreamError
from .controls import CameraControls, ControlError
from .messages import (
    AudioChunk,
    H264Unit,
    Message,
    ProtocolError,
    VideoFrame,
    parse_binary,
    parse_message,
    parse_text,
)

# Kept equal to the daemon's version (Cargo.toml); tests/test_package.py checks it.
__version__ = "0.1.0"

__all__ = [
    "AsyncStream",
    "AudioChunk",
    "AuthError",
    "Backoff",
    "CameraControls",
    "ConnectError",
    "ControlError",
    "H264Unit",
    "Message",
    "ProtocolError",
    "Stream",
    "StreamError",
    "VideoFrame",
    "parse_binary",
    "parse_message",
    "parse_text",
    "__version__",
]
