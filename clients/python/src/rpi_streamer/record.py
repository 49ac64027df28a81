"""Records a stream to a folder: ``python -m rpi_streamer.record ADDRESS FOLDER``.

The folder gets:

- ``frames/<capture time>.jpg``: every JPEG as the daemon sent it (not re-encoded), named by
  its capture time in UTC, ``YYYYMMDDTHHMMSS.ffffffZ.jpg``, so names sort in time order;
- ``audio.wav``: the audio (16-bit PCM at the stream's rate and channels); a gap in the
  stream (a lost chunk, a reconnection) of up to 10 s is filled with silence so that the
  WAV keeps time;
- ``timestamps.csv``: one row per frame and per audio chunk, in arrival order:
  ``kind`` (video/audio), ``capture_ts`` (UNIX seconds), ``received_ts`` (this machine's
  clock), ``file``, ``width``, ``height``, ``bytes`` (video), ``wav_frame`` (where the
  chunk's first sample is in audio.wav) and ``frames`` (samples per channel) for audio.

It stops after ``--seconds`` or ``--frames``, or on Ctrl-C, and always leaves complete
files. The "NO SIGNAL" placeholder pictures (camera missing) are counted, not saved.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from typing import IO, List, Optional

from ._cli import add_connection_args, stream_from_args
from .client import StreamError
from .messages import AudioChunk, AudioFormat, ProtocolError, VideoFrame

CSV_COLUMNS = [
    "kind", "capture_ts", "received_ts", "file", "width", "height", "bytes", "wav_frame",
    "frames",
]
MAX_SILENCE_S = 10.0


def frame_name(ts: float) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ.jpg`` for a capture time (UTC)."""
    when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return when.strftime("%Y%m%dT%H%M%S.%fZ") + ".jpg"


@dataclass
class Summary:
    """What a recording holds."""

    frames: int = 0
    placeholders: int = 0
    audio_chunks: int = 0
    wav_frames: int = 0
    silence_frames: int = 0
    audio_rate: int = 0
    first_ts: Optional[float] = None
    last_ts: Optional[float] = None
    skipped_audio: List[str] = field(default_factory=list)

    def describe(self) -> str:
        span = 0.0
        if self.first_ts is not None and self.last_ts is not None:
            span = self.last_ts - self.first_ts
        audio = (
            f"{self.wav_frames / self.audio_rate:.2f} s of audio "
            f"({self.audio_chunks} chunks, {self.silence_frames / self.audio_rate:.2f} s of it "
            "filled gaps)"
            if self.audio_rate
            else "no audio"
        )
        return (
            f"{self.frames} frames over {span:.2f} s of capture time, {audio}, "
            f"{self.placeholders} placeholder frames not saved"
        )


class Recorder:
    """Writes messages to a recording folder; :meth:`close` finishes the files."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.frames_dir = os.path.join(folder, "frames")
        os.makedirs(self.frames_dir, exist_ok=True)
        self._csv_file: IO[str] = open(os.path.join(folder, "timestamps.csv"), "w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(CSV_COLUMNS)
        self._wav: Optional[wave.Wave_write] = None
        self._audio_format: Optional[AudioFormat] = None
        self._audio_start: float = 0.0
        self._last_video_ts = 0.0
        self._last_audio_ts = 0.0
        self.summary = Summary()

    def video(self, frame: VideoFrame) -> None:
        """Saves one frame (not a placeholder, nor one already saved before a reconnect)."""
        if frame.placeholder:
            self.summary.placeholders += 1
            return
        if frame.ts <= self._last_video_ts:
            return
        self._last_video_ts = frame.ts
        name = frame_name(frame.ts)
        with open(os.path.join(self.frames_dir, name), "wb") as f:
            f.write(frame.jpeg)
        self._csv.writerow(
            ["video", f"{frame.ts:.6f}", f"{time.time():.6f}", f"frames/{name}", frame.width,
             frame.height, len(frame.jpeg), "", ""]
        )
        s = self.summary
        s.frames += 1
        s.first_ts = frame.ts if s.first_ts is None else s.first_ts
        s.last_ts = frame.ts

    def audio(self, chunk: AudioChunk) -> None:
        """Appends one chunk to the WAV, after silence for a gap since the previous one."""
        if chunk.ts <= self._last_audio_ts:
            return
        fmt = (chunk.rate, chunk.channels)
        if self._wav is None:
            self._wav = wave.open(os.path.join(self.folder, "audio.wav"), "wb")
            self._wav.setnchannels(chunk.channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(chunk.rate)
            self._audio_format, self._audio_start = fmt, chunk.ts
            self.summary.audio_rate = chunk.rate
        elif fmt != self._audio_format:
            # A WAV has one format: a daemon restarted with another keeps its audio out.
            self.summary.skipped_audio.append(f"{chunk.ts:.6f}: {fmt} is not {self._audio_format}")
            return
        self._last_audio_ts = chunk.ts
        s = self.summary
        gap = round((chunk.ts - self._audio_start) * chunk.rate) - s.wav_frames
        if chunk.frames // 2 < gap <= MAX_SILENCE_S * chunk.rate:
            self._wav.writeframes(b"\0\0" * chunk.channels * gap)
            s.wav_frames += gap
            s.silence_frames += gap
        self._csv.writerow(
            ["audio", f"{chunk.ts:.6f}", f"{time.time():.6f}", "audio.wav", "", "", "",
             s.wav_frames, chunk.frames]
        )
        self._wav.writeframes(chunk.pcm)
        s.wav_frames += chunk.frames
        s.audio_chunks += 1

    def close(self) -> None:
        """Finishes the WAV header and flushes the CSV."""
        if self._wav is not None:
            self._wav.close()
        self._csv_file.close()


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m rpi_streamer.record",
        description="Record the daemon's stream to FOLDER: JPEGs named by capture time, "
        "audio.wav and timestamps.csv.",
    )
    add_connection_args(parser)
    parser.add_argument("folder", help="where to write (created if missing)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--no-audio", action="store_true", help="do not write audio.wav")
    args = parser.parse_args(argv)

    stream = stream_from_args(args)
    recorder = Recorder(args.folder)
    timer = None
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stream.close)
        timer.daemon = True
        timer.start()
    status = 0
    try:
        with stream:
            for message in stream:
                if isinstance(message, VideoFrame):
                    recorder.video(message)
                    if args.frames is not None and recorder.summary.frames >= args.frames:
                        break
                elif isinstance(message, AudioChunk) and not args.no_audio:
                    recorder.audio(message)
    except KeyboardInterrupt:
        pass
    except (StreamError, ProtocolError) as e:
        print(f"record: {e}", file=sys.stderr)
        status = 1
    finally:
        if timer is not None:
            timer.cancel()
        recorder.close()
    for problem in recorder.summary.skipped_audio[:5]:
        print(f"record: audio left out at {problem}", file=sys.stderr)
    print(f"record: {args.folder}: {recorder.summary.describe()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
