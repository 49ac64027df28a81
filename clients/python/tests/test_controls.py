"""CameraControls against the daemon's test source (Brightness, Contrast, Saturation)."""

from __future__ import annotations

import pytest

from rpi_streamer import AuthError, CameraControls, ControlError, Stream, VideoFrame

from helpers import collect


def mean_level(frame: VideoFrame) -> float:
    pixels = frame.to_array()
    return float(pixels.mean())


def test_controls_are_listed_set_live_and_seen_in_the_next_frames(start_daemon):
    daemon = start_daemon("--width", "160", "--height", "120", "--brightness", "0.1")
    cam = CameraControls(daemon.address)
    listed = {c["name"]: c for c in cam.list()}
    assert sorted(listed) == ["Brightness", "Contrast", "Saturation"]
    assert listed["Brightness"]["value"] == 0.1
    assert (listed["Brightness"]["min"], listed["Brightness"]["max"]) == (-1, 1)
    with Stream(daemon.address) as stream:
        before = mean_level(collect(stream, VideoFrame, 1)[0])
        now = cam.set(Brightness=0.8)
        assert now["Brightness"]["value"] == 0.8
        after = max(mean_level(f) for f in collect(stream, VideoFrame, 4))
    assert after > before + 60, (before, after)


def test_a_refused_change_says_what_is_valid_and_changes_nothing(start_daemon):
    daemon = start_daemon("--width", "160", "--height", "120")
    cam = CameraControls(daemon.address)
    with pytest.raises(ControlError, match=r"Contrast takes a number in 0\.\.32 \(got 99\)") as e:
        cam.set({"Contrast": 99, "Brightness": 0.5})
    assert e.value.status == 400
    assert {c["name"]: c["value"] for c in cam.list()}["Brightness"] == 0


def test_controls_need_the_streams_credentials(start_daemon):
    daemon = start_daemon("--auth-token", "secret-token-1")
    with pytest.raises(AuthError):
        CameraControls(daemon.address).list()
    assert CameraControls(daemon.address, token="secret-token-1").list()
