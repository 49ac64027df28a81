"""Prints live figures of a stream: ``python -m rpi_streamer.stats ADDRESS``.

One line per ``--interval`` (default 1 s)::

    12:00:01  15.0 fps  640x480  3.2 Mbit/s  latency 9.8 / 14.1 / 20.3 ms  audio 50.0/s
    placeholders 0  connections 1

(one line on the terminal).

Latency is this machine's receive time minus the capture time, as median / 90th percentile /
maximum over the interval: it includes capture, encoding, the network and this program, and
is only true when both machines' clocks are synchronised (NTP); otherwise it is off by their
difference.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import List, Optional

from ._cli import add_connection_args, stream_from_args
from .client import StreamError
from .messages import AudioChunk, H264Unit, ProtocolError, VideoFrame


def percentile(sorted_values: List[float], fraction: float) -> float:
    """The value at ``fraction`` (0-1) of an ascending list (nearest rank)."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class Window:
    """Figures gathered over one interval."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.latencies: List[float] = []
        self.bytes = 0
        self.audio = 0
        self.placeholders = 0
        self.size = "-"

    def line(self, connections: int) -> str:
        elapsed = max(1e-6, time.monotonic() - self.started)
        fps = len(self.latencies) / elapsed
        lat = sorted(self.latencies)
        latency = (
            "latency {:.1f} / {:.1f} / {:.1f} ms".format(
                percentile(lat, 0.5) * 1e3, percentile(lat, 0.9) * 1e3, lat[-1] * 1e3
            )
            if lat
            else "latency -"
        )
        return (
            f"{time.strftime('%H:%M:%S')}  {fps:.1f} fps  {self.size}  "
            f"{self.bytes * 8 / elapsed / 1e6:.1f} Mbit/s  {latency}  "
            f"audio {self.audio / elapsed:.1f}/s  placeholders {self.placeholders}  "
            f"connections {connections}"
        )


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m rpi_streamer.stats",
        description="Print the stream's fps, bitrate and latency (receive time - capture "
        "time) once per interval.",
    )
    add_connection_args(parser)
    parser.add_argument("--video", choices=("mjpeg", "h264"), default="mjpeg")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per line")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)

    stream = stream_from_args(args, video=args.video)
    timer = None
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stream.close)
        timer.daemon = True
        timer.start()
    window = Window()
    try:
        with stream:
            for message in stream:
                now = time.time()
                if isinstance(message, (VideoFrame, H264Unit)):
                    if message.placeholder:
                        window.placeholders += 1
                    else:
                        window.latencies.append(now - message.ts)
                    payload = message.jpeg if isinstance(message, VideoFrame) else message.data
                    window.bytes += len(payload)
                    window.size = f"{message.width}x{message.height}"
                elif isinstance(message, AudioChunk):
                    window.audio += 1
                if time.monotonic() - window.started >= args.interval:
                    print(window.line(stream.connections), flush=True)
                    window = Window()
    except KeyboardInterrupt:
        pass
    except (StreamError, ProtocolError) as e:
        print(f"stats: {e}", file=sys.stderr)
        return 1
    finally:
        if timer is not None:
            timer.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
