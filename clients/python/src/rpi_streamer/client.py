"""Connecting to the daemon's ``/stream``: :class:`Stream` (blocking) and
:class:`AsyncStream` (asyncio), with authentication and reconnection.

Both follow one plan (:class:`_Plan`): the URL and headers to connect with, which failures
are worth another attempt, how long to wait before it, and where text audio's format comes
from. Only the I/O differs: ``websockets.sync.client`` against ``websockets.asyncio.client``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import (
    AsyncIterator,
    Dict,
    Iterator,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from .messages import AudioChunk, AudioFormat, H264Unit, Message, VideoFrame, parse_message

__all__ = ["AsyncStream", "AuthError", "Backoff", "ConnectError", "Stream", "StreamError"]

# The largest message accepted: a 4096x4096 JPEG at quality 100, base64'd, fits.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STATUS_TIMEOUT_S = 5.0

M = TypeVar("M", VideoFrame, AudioChunk, H264Unit)


class StreamError(Exception):
    """The stream could not be read (the base of this module's errors)."""


class AuthError(StreamError):
    """The daemon refused the credentials (HTTP 401 or 403): retrying would not help."""


class ConnectError(StreamError, ConnectionError):
    """No connection could be made (or remade) within the :class:`Backoff`'s attempts."""


@dataclass(frozen=True)
class Backoff:
    """How reconnection waits: ``initial`` seconds after the first failure, times ``factor``
    after each further one, never more than ``maximum``; after ``attempts`` failures in a row
    (None: never) the stream raises :class:`ConnectError`. The count restarts once a
    connection delivers a message. The defaults wait 0.5, 1, 2, 4, 8, 10, 10… s and give up
    after 10 failed attempts, about a minute: long enough for the daemon (or a Pi) to restart.
    """

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    attempts: Optional[int] = 10

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) failed attempts in a row."""
        return min(self.maximum, self.initial * self.factor ** max(0, failures - 1))

    def exhausted(self, failures: int) -> bool:
        """True once ``failures`` attempts in a row have failed and no more are allowed."""
        return self.attempts is not None and failures >= self.attempts


def stream_url(address: str, fmt: str, video: str, token: Optional[str]) -> str:
    """The ``ws://`` URL of ``/stream`` for ``address``: ``host``, ``host:port``, or a
    ``ws(s)://`` or ``http(s)://`` URL (an http URL without a path gets ``/stream``)."""
    if "://" not in address:
        address = "ws://" + address
    parts = urllib.parse.urlsplit(address)
    scheme = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"not a daemon address: {address!r} (use host:port or ws://host:port)")
    netloc = parts.netloc if parts.port else f"{parts.netloc}:8080"
    path = parts.path if parts.path not in ("", "/") else "/stream"
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("format", fmt))
    if video != "mjpeg":
        query.append(("video", video))
    if token is not None:
        query.append(("token", token))
    return urllib.parse.urlunsplit((scheme, netloc, path, urllib.parse.urlencode(query), ""))


def auth_headers(
    token: Optional[str], basic_auth: Union[None, str, Tuple[str, str]]
) -> Dict[str, str]:
    """The ``Authorization`` header for Basic credentials (``"user:pw"`` or a pair), else for
    a bearer token; none for neither."""
    if basic_auth is not None:
        user, password = basic_auth.split(":", 1) if isinstance(basic_auth, str) else basic_auth
        pair = f"{user}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return {}


def status_url(url: str) -> str:
    """The ``/status`` URL of the daemon serving ``url`` (its token kept, if it has one)."""
    parts = urllib.parse.urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    token = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k == "token"]
    return urllib.parse.urlunsplit(
        (scheme, parts.netloc, "/status", urllib.parse.urlencode(token), "")
    )


class _Plan:
    """What both streams share: where to connect and how, and what a failure means."""

    def __init__(
        self,
        address: str,
        fmt: str,
        video: str,
        token: Optional[str],
        basic_auth: Union[None, str, Tuple[str, str]],
        reconnect: bool,
        backoff: Backoff,
        audio_format: Optional[AudioFormat],
        open_timeout: float,
    ) -> None:
        if fmt not in ("binary", "text"):
            raise ValueError(f"format must be 'binary' or 'text', not {fmt!r}")
        if video not in ("mjpeg", "h264"):
            raise ValueError(f"video must be 'mjpeg' or 'h264', not {video!r}")
        self.headers = auth_headers(token, basic_auth)
        if basic_auth is None:
            token = None  # sent as a header, kept out of the URL (and logs)
        # With both, Basic takes the header and the token goes in the query.
        self.url = stream_url(address, fmt, video, token)
        self.status_url = status_url(self.url)
        self.text = fmt == "text"
        self.reconnect = reconnect
        self.backoff = backoff
        self.fixed_audio_format = audio_format
        self.open_timeout = open_timeout


    def refusal(self, error: Exception) -> Optional[StreamError]:
        """The error to raise at once for a failed attempt, or None if another may succeed."""
        if isinstance(error, InvalidStatus):
            code = error.response.status_code
            if code in (401, 403):
                return AuthError(f"{self.url}: the daemon refused the credentials (HTTP {code})")
            if 400 <= code < 500 or code == 501:
                body = error.response.body or b""
                reason = body.decode("utf-8", "replace").strip()
                return StreamError(f"{self.url}: the daemon refused the request: {code} {reason}")
        if isinstance(error, InvalidURI):
            return StreamError(str(error))
        return None

    def audio_format(self) -> Optional[AudioFormat]:
        """Rate and channels of text audio: the caller's, else the daemon's ``/status``."""
        if self.fixed_audio_format is not None or not self.text:
            return self.fixed_audio_format
        request = urllib.request.Request(self.status_url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT_S) as response:
                status = json.load(response)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise AuthError(f"{self.status_url}: refused (HTTP {e.code})") from None
            return None  # a server without /status (the seed): no text audio
        except (OSError, ValueError):
            return None  # the stream connected; a later audio message retries
        audio = status.get("audio") if isinstance(status, dict) else None
        if not isinstance(audio, dict):
            return None
        rate, channels = audio.get("sample_rate"), audio.get("channels")
        if isinstance(rate, int) and rate > 0 and isinstance(channels, int) and channels > 0:
            return rate, channels
        return None


def _needs_audio_format(raw: Union[str, bytes]) -> bool:
    return isinstance(raw, str) and raw.startswith("audio:")


class Stream:
    """The daemon's stream, read by blocking iteration (``websockets.sync``).

    >>> with Stream("raspberrypi.local:8080") as stream:      # doctest: +SKIP
    ...     for frame in stream.frames():
    ...         print(frame.ts, frame.width, frame.height, len(frame.jpeg))

    Iterating yields every :class:`VideoFrame` (or :class:`H264Unit` with ``video="h264"``)
    and :class:`AudioChunk` in arrival order; :meth:`frames`, :meth:`units` and
    :meth:`audio` yield one kind. A lost connection is remade (see :class:`Backoff`) unless
    ``reconnect=False``, in which case the iteration ends with the connection.

    Arguments:
        address: ``host:port`` (port 8080 if omitted), or a ``ws://``/``http://`` URL.
        format: ``"binary"`` (default: raw payloads, placeholder flag) or ``"text"``.
        video: ``"mjpeg"`` (JPEG frames) or ``"h264"`` (H.264 access units).
        token: the daemon's ``--auth-token``.
        basic_auth: the daemon's ``--basic-auth``, as ``"user:password"`` or a pair.
        reconnect: remake lost connections (default True).
        backoff: waits between attempts and how many in a row before giving up.
        audio_format: ``(rate, channels)`` of text audio; by default read from ``/status``.
        open_timeout: seconds for one connection attempt.

    Raises (while iterating): :class:`AuthError` when refused, :class:`ConnectError` when the
    attempts run out, :class:`ProtocolError` for a malformed message, :class:`StreamError`
    when the daemon refuses the request itself.
    """

    def __init__(
        self,
        address: str,
        *,
        format: str = "binary",
        video: str = "mjpeg",
        token: Optional[str] = None,
        basic_auth: Union[None, str, Tuple[str, str]] = None,
        reconnect: bool = True,
        backoff: Backoff = Backoff(),
        audio_format: Optional[AudioFormat] = None,
        open_timeout: float = 10.0,
    ) -> None:
        self._plan = _Plan(
            address, format, video, token, basic_auth, reconnect, backoff, audio_format,
            open_timeout,
        )
        self.url: str = self._plan.url
        """The WebSocket URL connected to (the token is in it only next to basic auth)."""
        self.connections: int = 0
        """Connections made so far (more than one after a reconnection)."""
        self._closed = threading.Event()
        self._ws: Optional[SyncConnection] = None
        self._messages: Optional[Iterator[Message]] = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the stream (from any thread): the iteration stops, nothing reconnects."""
        self._closed.set()
        ws = self._ws
        if ws is not None:
            ws.close()

    def __iter__(self) -> Iterator[Message]:
        if self._messages is None:
            self._messages = self._run()
        return self._messages

    def frames(self) -> Iterator[VideoFrame]:
        """Only the JPEG frames (``video="mjpeg"``)."""
        return _only(self, VideoFrame)

    def units(self) -> Iterator[H264Unit]:
        """Only the H.264 access units (``video="h264"``)."""
        return _only(self, H264Unit)

    def audio(self) -> Iterator[AudioChunk]:
        """Only the audio chunks."""
        return _only(self, AudioChunk)

    def _run(self) -> Iterator[Message]:
        plan = self._plan
        failures = 0
        while not self._closed.is_set():
            try:
                # Entered as a context manager (websockets >= 17.1 wants that; older ones
                # return the connection either way); closed in the `finally` below.
                ws = sync_connect(
                    plan.url,
                    additional_headers=plan.headers,
                    open_timeout=plan.open_timeout,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,  # JPEG and PCM do not deflate; the daemon declines it
                ).__enter__()
            except (OSError, TimeoutError, InvalidHandshake) as e:
                refusal = plan.refusal(e)
                if refusal is not None:
                    raise refusal from e
                failures += 1
                if not plan.reconnect or plan.backoff.exhausted(failures):
                    raise ConnectError(
                        f"cannot connect to {plan.url} after {failures} attempt(s): {e}"
                    ) from e
                self._closed.wait(plan.backoff.delay(failures))
                continue
            self._ws = ws
            if self._closed.is_set():  # closed while connecting
                ws.close()
                return
            self.connections += 1
            try:
                audio_format = plan.audio_format()
                asked_at = time.monotonic()
                while True:
                    raw = ws.recv()
                    if _needs_audio_format(raw) and audio_format is None:
                        if time.monotonic() - asked_at > 1.0:  # the daemon may know it by now
                            audio_format, asked_at = plan.audio_format(), time.monotonic()
                    message = parse_message(raw, audio_format)
                    failures = 0
                    yield message
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                ws.close()
            if not plan.reconnect or self._closed.is_set():
                return
            failures += 1
            if plan.backoff.exhausted(failures):
                raise ConnectError(f"{plan.url}: connection lost {failures} times in a row")
            self._closed.wait(plan.backoff.delay(failures))


def _only(stream: Stream, kind: Type[M]) -> Iterator[M]:
    for message in stream:
        if isinstance(message, kind):
            yield message


class AsyncStream:
    """The daemon's stream for asyncio: the same arguments, messages and errors as
    :class:`Stream`, read with ``async for``.

    >>> async with AsyncStream("raspberrypi.local:8080") as stream:   # doctest: +SKIP
    ...     async for frame in stream.frames():
    ...         print(frame.ts, len(frame.jpeg))
    """

    def __init__(
        self,
        address: str,
        *,
        format: str = "binary",
        video: str = "mjpeg",
        token: Optional[str] = None,
        basic_auth: Union[None, str, Tuple[str, str]] = None,
        reconnect: bool = True,
        backoff: Backoff = Backoff(),
        audio_format: Optional[AudioFormat] = None,
        open_timeout: float = 10.0,
    ) -> None:
        self._plan = _Plan(
            address, format, video, token, basic_auth, reconnect, backoff, audio_format,
            open_timeout,
        )
        self.url: str = self._plan.url
        """The WebSocket URL connected to."""
        self.connections: int = 0
        """Connections made so far (more than one after a reconnection)."""
        self._closed = False
        self._ws: Optional[AsyncConnection] = None
        self._messages: Optional[AsyncIterator[Message]] = None

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends the stream: the iteration stops, nothing reconnects."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            await ws.close()

    def __aiter__(self) -> AsyncIterator[Message]:
        if self._messages is None:
            self._messages = self._run()
        return self._messages

    def frames(self) -> AsyncIterator[VideoFrame]:
        """Only the JPEG frames (``video="mjpeg"``)."""
        return _aonly(self, VideoFrame)

    def units(self) -> AsyncIterator[H264Unit]:
        """Only the H.264 access units (``video="h264"``)."""
        return _aonly(self, H264Unit)

    def audio(self) -> AsyncIterator[AudioChunk]:
        """Only the audio chunks."""
        return _aonly(self, AudioChunk)

    async def _run(self) -> AsyncIterator[Message]:
        plan = self._plan
        failures = 0
        while not self._closed:
            try:
                ws = await async_connect(
                    plan.url,
                    additional_headers=plan.headers,
                    open_timeout=plan.open_timeout,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,  # JPEG and PCM do not deflate; the daemon declines it
                )
            except (OSError, asyncio.TimeoutError, InvalidHandshake) as e:
                refusal = plan.refusal(e)
                if refusal is not None:
                    raise refusal from e
                failures += 1
                if not plan.reconnect or plan.backoff.exhausted(failures):
                    raise ConnectError(
                        f"cannot connect to {plan.url} after {failures} attempt(s): {e}"
                    ) from e
                await asyncio.sleep(plan.backoff.delay(failures))
                continue
            self._ws = ws
            self.connections += 1
            try:
                audio_format = await asyncio.to_thread(plan.audio_format)
                asked_at = time.monotonic()
                while True:
                    raw = await ws.recv()
                    if _needs_audio_format(raw) and audio_format is None:
                        if time.monotonic() - asked_at > 1.0:
                            audio_format = await asyncio.to_thread(plan.audio_format)
                            asked_at = time.monotonic()
                    message = parse_message(raw, audio_format)
                    failures = 0
                    yield message
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                await ws.close()
            if not plan.reconnect or self._closed:
                return
            failures += 1
            if plan.backoff.exhausted(failures):
                raise ConnectError(f"{plan.url}: connection lost {failures} times in a row")
            await asyncio.sleep(plan.backoff.delay(failures))


async def _aonly(stream: AsyncStream, kind: Type[M]) -> AsyncIterator[M]:
    async for message in stream:
        if isinstance(message, kind):
            yield message
