"""The daemon's camera controls (``/controls``): list them, and change them live.

>>> cam = CameraControls("raspberrypi.local:8080")                 # doctest: +SKIP
>>> [c["name"] for c in cam.list()]                                # doctest: +SKIP
['AeEnable', 'AfMode', 'AnalogueGain', 'AwbMode', 'Brightness', ...]
>>> cam.set(Brightness=0.2, AwbMode="Daylight")["Brightness"]["value"]   # doctest: +SKIP
0.2

Names are the camera's own (libcamera's for a Pi camera, ``v4l2-ctl``'s for a USB camera);
see the daemon's docs/controls.md. A refused change (an unknown name, a value out of range,
a value the camera rejects) raises :class:`ControlError` with the daemon's message, which
lists what is valid, and changes nothing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Tuple, Union

from .client import AuthError, StreamError, auth_headers

TIMEOUT_S = 10.0

Control = Dict[str, Any]


class ControlError(StreamError):
    """The daemon refused a change (HTTP 400, 409 or 503); ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def controls_url(address: str) -> str:
    """``http(s)://host:port/controls`` for ``host:port`` or a ws/http URL of the daemon."""
    if "://" not in address:
        address = "http://" + address
    parts = urllib.parse.urlsplit(address)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/controls", "", ""))


class CameraControls:
    """The controls of the camera behind the daemon at ``address`` (``host:port`` or a URL),
    with the same credentials as :class:`~rpi_streamer.Stream` (``token=``, ``basic_auth=``).
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        basic_auth: Union[None, str, Tuple[str, str]] = None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.url = controls_url(address)
        self.timeout = timeout
        self.headers = auth_headers(token, basic_auth)

    def _call(self, body: Optional[bytes]) -> List[Control]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise AuthError(f"{self.url}: refused (HTTP {e.code})") from None
            try:
                message = json.loads(e.read()).get("error", "")
            except (ValueError, AttributeError):
                message = ""
            raise ControlError(message or f"{self.url}: HTTP {e.code}", e.code) from None
        if not isinstance(answer, list):
            raise StreamError(f"{self.url}: not a list of controls")
        return answer

    def list(self) -> List[Control]:
        """Every control of the open camera (``[]`` while none is open): dicts with ``name``,
        ``type`` (bool, int, float, menu), ``min``, ``max``, ``step``, ``default``,
        ``value``, ``read_only`` and ``menu`` (``[{"value": 0, "name": "AwbAuto"}, …]``)."""
        return self._call(None)

    def set(self, values: Optional[Dict[str, Any]] = None, **more: Any) -> Dict[str, Control]:
        """Sets the controls named in ``values`` and ``more`` (all or none), applied before
        the camera's next frame; returns every control by name, as the camera then reports
        them. Menu values may be entry names (``"Daylight"``) or numbers."""
        changes = {**(values or {}), **more}
        answer = self._call(json.dumps(changes).encode())
        return {c["name"]: c for c in answer}
