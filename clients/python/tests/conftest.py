"""The real daemon for the tests: its binary on the synthetic source, on free loopback ports.

The binary is $RPI_STREAMER_DAEMON, else the repository's target/debug/rpi-streamer
(`cargo build` first; scripts/checks/python-client does both).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parents[3]
FPS = 15


def daemon_binary() -> str:
    path = os.environ.get("RPI_STREAMER_DAEMON") or str(REPO / "target" / "debug" / "rpi-streamer")
    if not os.access(path, os.X_OK):
        pytest.exit(f"no daemon binary at {path}: run `cargo build` or set RPI_STREAMER_DAEMON", 2)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """rpi-streamer --camera-type test on 127.0.0.1; stopped by :meth:`stop` or at teardown."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, "RUST_LOG": "info", **(env or {})}
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix=f"daemon-{self.port}-", suffix=".log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "Daemon":
        self.proc = subprocess.Popen(
            [daemon_binary(), "--camera-type", "test", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-client", "--fps", str(FPS), *self.args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"the daemon exited with {code}: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the daemon was not healthy within {timeout} s: {self.log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]


@pytest.fixture
def start_daemon() -> Iterator:
    """A function starting a daemon with extra flags (and environment); all stopped after."""
    started: List[Daemon] = []

    def start(*args: str, env: Optional[Dict[str, str]] = None) -> Daemon:
        daemon = Daemon(args, env).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
        daemon.log.close()


@pytest.fixture(scope="module")
def av_daemon() -> Iterator[Daemon]:
    """One daemon with the synthetic tone, shared by a module's read-only tests."""
    daemon = Daemon(["--enable-audio", "--width", "320", "--height", "240"]).start()
    yield daemon
    daemon.stop()
    daemon.log.close()
