#!/usr/bin/env python3
"""The client in public/ in a second browser engine: headless Firefox ESR through Mozilla's
own Marionette client (Debian has no geckodriver).

Run by scripts/checks/browser after the Chromium tests, in a venv with `marionette_driver`
(and the system's selenium, for client_test's helpers). The same checks of canvas pixels as
in Chromium: H.264 through WebCodecs on http://127.0.0.1, MJPEG in both framings, and the
clock exchange.

Usage: firefox_test.py --daemon PATH --artifacts DIR [TEST...]
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from marionette_driver.marionette import Marionette

from client_test import (FPS, MARKER_RGB_JS, Daemon, assert_pattern_animates, client_codecs,
                         client_formats, wait_until)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirefoxPage:
    """One headless Firefox ESR on its own profile and Marionette port."""

    def __init__(self, profile_dir, log_path):
        self.port = free_port()
        with open(os.path.join(profile_dir, "user.js"), "w") as f:
            f.write(f'user_pref("marionette.port", {self.port});\n'
                    # No first-run pages, updates or telemetry on a test machine.
                    'user_pref("browser.shell.checkDefaultBrowser", false);\n'
                    'user_pref("app.update.enabled", false);\n'
                    'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
                    'user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);\n'
                    'user_pref("browser.startup.homepage_override.mstone", "ignore");\n')
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(
            [shutil.which("firefox-esr") or "firefox-esr", "--headless", "--marionette",
             "--no-remote", "--profile", profile_dir, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.client = Marionette(host="127.0.0.1", port=self.port)
        self.client.start_session(timeout=60)
        self.client.timeout.script = 10

    def open(self, url):
        self.client.navigate(url)
        wait_until("the client to load", lambda: self.js("return !!window.rpiStreamer"), 10)

    def js(self, script, *args):
        return self.client.execute_script(script, script_args=list(args), sandbox=None)

    def snap(self):
        return self.js("return window.rpiStreamer.snapshot()")

    def marker_rgb(self):
        return self.js(MARKER_RGB_JS)

    def quit(self):
        try:
            self.client.delete_session()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def test_firefox_plays_h264_through_webcodecs(ctx):
    """On http://127.0.0.1 Firefox gets H.264, decodes it and draws the moving pattern."""
    with Daemon(ctx.binary, ["--camera-type", "test", "--fps", str(FPS)], log_dir=ctx.artifacts) as d:
        ctx.page.open(f"http://127.0.0.1:{d.port}/")
        wait_until("the H.264 codec", lambda: ctx.page.snap()["codec"] == "h264", 10)
        assert_pattern_animates(ctx.page, (640, 480))
        assert client_codecs(d) == ["h264"], d.status()["clients"]
        time.sleep(5)
        snap = ctx.page.snap()
        assert snap["decodeErrors"] == 0, snap
        assert snap["framesShown"] > 5 * FPS * 0.8, snap
        print(f"    {snap['framesShown']} frames, codec {snap['h264Codec']}, "
              f"{snap['fps']:.1f} fps, latency {snap['latencyMs']:.0f} ms")


def test_firefox_renders_mjpeg_in_both_framings(ctx):
    """MJPEG, binary and text, renders in Firefox too."""
    with Daemon(ctx.binary, ["--camera-type", "test", "--fps", str(FPS)], log_dir=ctx.artifacts) as d:
        for fmt in ("binary", "text"):
            ctx.page.open(f"http://127.0.0.1:{d.port}/?video=mjpeg&format={fmt}")
            assert_pattern_animates(ctx.page, (640, 480))
            snap = ctx.page.snap()
            assert (snap["codec"], snap["format"]) == ("mjpeg", fmt), snap
            assert client_formats(d) == [fmt], d.status()["clients"]
            ctx.page.client.navigate("about:blank")
            wait_until("the client to leave", lambda: d.status()["clients"] == [], 5)


def test_firefox_measures_the_daemon_clock(ctx):
    """The clock exchange gives a small offset (same machine) and a sane latency readout."""
    with Daemon(ctx.binary, ["--camera-type", "test", "--fps", str(FPS)], log_dir=ctx.artifacts) as d:
        ctx.page.open(f"http://127.0.0.1:{d.port}/")
        snap = wait_until("a synced clock", lambda: (s := ctx.page.snap())["clockSynced"]
                          and len(s["latencies"]) > 10 and s, 10)
        assert abs(snap["clockOffsetMs"]) <= 5, snap
        assert 0 <= snap["latencyMs"] < 1000, snap


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("tests", nargs="*", help="names (substrings) of tests to run")
    args = ap.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    selected = [t for t in TESTS if not args.tests or any(s in t.__name__ for s in args.tests)]
    if not selected:
        return 0
    profile = tempfile.mkdtemp(prefix="rpi-streamer-firefox-")
    log_path = os.path.join(args.artifacts, "firefox.log")
    try:
        page = FirefoxPage(profile, log_path)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"FAIL: could not start headless Firefox ESR through Marionette: {first} "
              f"(see {log_path})")
        return 1
    ctx = argparse.Namespace(binary=args.daemon, artifacts=args.artifacts, page=page)
    failed = []
    try:
        for test in selected:
            start = time.monotonic()
            try:
                page.client.navigate("about:blank")
                test(ctx)
                print(f"ok   {test.__name__} ({time.monotonic() - start:.1f} s)", flush=True)
            except Exception:
                failed.append(test.__name__)
                print(f"FAIL {test.__name__} ({time.monotonic() - start:.1f} s)", flush=True)
                traceback.print_exc()
                try:
                    with open(os.path.join(args.artifacts, f"{test.__name__}.png"), "wb") as f:
                        f.write(page.client.screenshot(format="binary"))
                except Exception:
                    pass
    finally:
        page.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{len(selected) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print(f"FAIL: {len(failed)} of {len(selected)} Firefox tests failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
