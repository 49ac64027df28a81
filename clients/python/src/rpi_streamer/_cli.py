"""What the command lines share: the connection flags and the stream they describe."""

from __future__ import annotations

import argparse
import os

from .client import Stream


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """The daemon's address and how to reach it."""
    parser.add_argument(
        "address", help="the daemon: host:port (e.g. raspberrypi.local:8080) or a ws:// URL"
    )
    parser.add_argument(
        "--format", choices=("binary", "text"), default="binary",
        help="wire framing to ask for (default binary)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("RPI_STREAMER_AUTH_TOKEN"),
        help="the daemon's --auth-token (default: $RPI_STREAMER_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--basic-auth", metavar="USER:PASSWORD", default=os.environ.get("RPI_STREAMER_BASIC_AUTH"),
        help="the daemon's --basic-auth (default: $RPI_STREAMER_BASIC_AUTH)",
    )


def stream_from_args(args: argparse.Namespace, video: str = "mjpeg") -> Stream:
    """The stream the parsed flags describe."""
    if args.basic_auth is not None and ":" not in args.basic_auth:
        raise SystemExit("--basic-auth must be USER:PASSWORD")
    return Stream(
        args.address, format=args.format, video=video, token=args.token,
        basic_auth=args.basic_auth,
    )
