"""The command lines and the README's first snippet, run as a user would, against the daemon."""

from __future__ import annotations

import ast
import csv
import re
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import List

from PIL import Image

from rpi_streamer.record import frame_name

from conftest import FPS

PACKAGE = Path(__file__).resolve().parents[1]
RECORD_S = 4.0


def run_module(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_recorder_writes_every_frame_a_wav_of_the_recording_time_and_their_timestamps(
    av_daemon, tmp_path
):
    folder = tmp_path / "rec"
    started = time.monotonic()
    done = run_module(
        "rpi_streamer.record", av_daemon.address, str(folder), "--seconds", str(RECORD_S)
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "frames over" in done.stdout

    with open(folder / "timestamps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    video = [r for r in rows if r["kind"] == "video"]
    audio = [r for r in rows if r["kind"] == "audio"]
    assert {r["kind"] for r in rows} == {"video", "audio"}

    # N JPEGs on disk, one per video row, each named by its capture time and decodable.
    jpegs = sorted((folder / "frames").iterdir())
    assert [f"frames/{p.name}" for p in jpegs] == sorted(r["file"] for r in video)
    assert len(jpegs) == len(video)
    # Roughly the daemon's rate over the recording (generous: a busy machine drops frames).
    assert 0.4 * FPS * RECORD_S <= len(video) <= FPS * RECORD_S + 3, len(video)
    for row in video:
        assert Path(row["file"]).name == frame_name(float(row["capture_ts"]))
        path = folder / row["file"]
        assert path.stat().st_size == int(row["bytes"])
        with Image.open(path) as image:
            image.load()
            assert image.size == (int(row["width"]), int(row["height"])) == (320, 240)
    stamps = [float(r["capture_ts"]) for r in video]
    assert stamps == sorted(set(stamps))

    # The WAV: the stream's format, as long as the recording (give or take the connection's
    # start), and its rows say where each chunk is in it.
    with wave.open(str(folder / "audio.wav")) as wav:
        rate, channels, length = wav.getframerate(), wav.getnchannels(), wav.getnframes()
        assert wav.getsampwidth() == 2
    assert (rate, channels) == (48000, 1)
    seconds = length / rate
    assert 0.5 * RECORD_S <= seconds <= elapsed + 0.5, (seconds, elapsed)
    last = audio[-1]
    assert int(last["wav_frame"]) + int(last["frames"]) == length
    positions = [int(r["wav_frame"]) for r in audio]
    assert positions == sorted(positions) and positions[0] == 0
    # Audio and video cover the same stretch of capture time.
    audio_start = float(audio[0]["capture_ts"])
    assert abs(audio_start + seconds - stamps[-1]) < 2.0


def test_the_recorder_stops_after_a_number_of_frames(av_daemon, tmp_path):
    done = run_module("rpi_streamer.record", av_daemon.address, str(tmp_path), "--frames", "5",
                      "--no-audio", "--format", "text")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "frames").iterdir())) == 5
    assert not (tmp_path / "audio.wav").exists()


def test_the_recorder_reports_a_refusal_in_one_line(start_daemon, tmp_path):
    daemon = start_daemon(env={"RPI_STREAMER_AUTH_TOKEN": "a-test-token-1234"})
    done = run_module("rpi_streamer.record", daemon.address, str(tmp_path), "--seconds", "5")
    assert done.returncode == 1
    assert "refused the credentials (HTTP 401)" in done.stderr


def test_stats_prints_fps_and_latency(av_daemon):
    done = run_module("rpi_streamer.stats", av_daemon.address, "--seconds", "3.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) >= 2, done.stdout
    match = re.search(r" ([\d.]+) fps  320x240 .* latency ([\d.]+) / ", lines[-1])
    assert match, lines[-1]
    assert 0.4 * FPS <= float(match.group(1)) <= 1.5 * FPS
    assert float(match.group(2)) < 1000


def first_python_snippet() -> str:
    readme = (PACKAGE / "README.md").read_text()
    match = re.search(r"^```python\n(.*?)^```", readme, re.M | re.S)
    assert match, "no ```python block in clients/python/README.md"
    return match.group(1)


def test_the_readmes_first_snippet_prints_one_line_per_frame(av_daemon):
    snippet = first_python_snippet()
    assert "raspberrypi.local:8080" in snippet
    proc = subprocess.Popen(
        [sys.executable, "-c", snippet.replace("raspberrypi.local:8080", av_daemon.address)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: List[str] = []

    def read():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) >= 5:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    proc.kill()
    _, stderr = proc.communicate(timeout=10)
    assert len(lines) >= 5, f"{lines} {stderr}"
    for line in lines:
        ts, size, length, unit = line.split()
        assert abs(float(ts) - time.time()) < 30
        assert size == "320x240" and int(length) > 1000 and unit == "bytes"


def test_the_opencv_example_is_valid_python_for_the_package():
    source = (PACKAGE / "examples" / "opencv_view.py").read_text()
    tree = ast.parse(source)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "rpi_streamer" in imported
