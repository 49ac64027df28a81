#!/usr/bin/env python3
"""Boots one first-boot root filesystem under qemu-system-aarch64 -M raspi3b and checks it
from the host (scripts/checks/first-boot runs it once per variant).

    drive.py --variant buildroot|sysv|systemd --kernel K --dtb DTB --initrd CPIO
             --log SERIAL.log --size WxH

The guest's only network is qemu's user-mode network, isolated (restrict=on), with two
forwards from 127.0.0.1 on the host: the daemon's port 8080 and the test agent's port 7000
(a shell, /first-boot/agent, baked into the test rootfs only). Every wait is bounded; every
failure ends the run with one line `FAIL: first-boot: <variant>: <cause>` and the tail of
the serial console. Prints the boot-to-first-frame time.
"""
import argparse
import base64
import http.client
import os
import re
import socket
import subprocess
import sys
import time

# Bounds, in seconds, for a loaded 2-core machine emulating a Pi 3 with TCG.
BOOT_LIMIT = 150
SERVICE_LIMIT = 30
SHUTDOWN_LIMIT = 90


class Failure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    def __init__(self, args):
        self.args = args
        self.variant = args.variant
        self.http_port = free_port()
        self.agent_port = free_port()
        self.started = None
        self.qemu = None

    # --- the VM ---------------------------------------------------------------------------
    def boot(self):
        append = "console=ttyS1,115200 loglevel=4 panic=-1"
        if self.variant == "systemd":
            # No udev here: a serial getty would wait 90 s for its device unit.
            append += " systemd.show_status=1 systemd.getty_auto=0"
        cmd = [
            "qemu-system-aarch64", "-M", "raspi3b",
            "-kernel", self.args.kernel, "-dtb", self.args.dtb, "-initrd", self.args.initrd,
            "-append", append,
            "-display", "none", "-monitor", "none", "-no-reboot",
            # serial 0 is the PL011 (Bluetooth on a Pi 3), serial 1 the mini UART: the console.
            "-serial", "null", "-serial", "file:" + self.args.log,
            "-usb", "-device", "usb-net,netdev=net0",
            "-netdev", "user,id=net0,restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{self.http_port}-:8080,"
            f"hostfwd=tcp:127.0.0.1:{self.agent_port}-:7000",
        ]
        self.started = time.monotonic()
        self.qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.args.log + ".qemu", "w"))

    def elapsed(self):
        return time.monotonic() - self.started

    def alive(self):
        return self.qemu is not None and self.qemu.poll() is None

    def console(self):
        try:
            with open(self.args.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        if self.alive():
            self.qemu.kill()
            self.qemu.wait(10)

    # --- talking to it --------------------------------------------------------------------
    def get(self, path, timeout=10):
        """(status, body) of GET path, or None when nothing answers."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status, body
        except (OSError, http.client.HTTPException):
            return None

    def run(self, command, timeout=75):
        """The agent runs `command` with sh in the guest: (exit status, output)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.agent_port), timeout=5) as s:
                    s.settimeout(max(1, deadline - time.monotonic()))
                    s.sendall(command.encode() + b"\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                text = data.decode(errors="replace")
                m = re.search(r"\nRC=(\d+)\n?$", "\n" + text)
                if m:
                    return int(m.group(1)), text[: m.start()].rstrip("\n")
                # slirp accepts before the guest listens: an empty answer means "not yet".
            except OSError:
                pass
            if time.monotonic() > deadline or not self.alive():
                raise Failure(f"the test agent did not answer `{command}`")
            time.sleep(0.5)

    def must(self, command, what):
        rc, out = self.run(command)
        if rc != 0:
            raise Failure(f"{what}: `{command}` exited {rc}: {out[-300:]}")
        return out

    def frames(self, count, timeout=30):
        """The sizes of the first `count` video frames /stream sends (text framing)."""
        deadline = time.monotonic() + timeout
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=10)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{self.http_port}\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += recv(s, deadline)
            head, buf = buf.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 101"):
                raise Failure(f"/stream answered {head.splitlines()[0]!r}, not a WebSocket upgrade")
            sizes = []
            message = b""  # text messages may come in fragments
            while len(sizes) < count:
                while len(buf) < 2:
                    buf += recv(s, deadline)
                fin, opcode, length, start = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x7F, 2
                if length == 126:
                    start = 4
                elif length == 127:
                    start = 10
                while len(buf) < start:
                    buf += recv(s, deadline)
                if length >= 126:
                    length = int.from_bytes(buf[2:start], "big")
                while len(buf) < start + length:
                    buf += recv(s, deadline)
                payload, buf = buf[start:start + length], buf[start + length:]
                if opcode == 8:
                    raise Failure("/stream closed the connection")
                if opcode not in (0, 1, 2):
                    continue  # ping, pong
                message = payload if opcode else message + payload
                if not fin:
                    continue
                if message.startswith(b"video:"):
                    parts = message.split(b":", 4)
                    jpeg = base64.b64decode(parts[4])
                    sizes.append((int(parts[2]), int(parts[3]), jpeg_size(jpeg)))
            return sizes
        finally:
            s.close()


def recv(s, deadline):
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        chunk = s.recv(262144)
    except socket.timeout:
        raise Failure("/stream sent no frame in time") from None
    if not chunk:
        raise Failure("/stream connection closed")
    return chunk


def jpeg_size(jpeg):
    """(width, height) from the JPEG's start-of-frame marker."""
    i = 2
    while i + 9 < len(jpeg):
        if jpeg[i] != 0xFF:
            return None
        marker = jpeg[i + 1]
        seg = int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(jpeg[i + 7:i + 9], "big"), int.from_bytes(jpeg[i + 5:i + 7], "big")
        i += 2 + seg
    return None


def ok(message):
    print(f"ok   {message}", flush=True)


def wait_for(what, predicate, limit, guest):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not guest.alive():
            raise Failure(f"qemu exited while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise Failure(f"{what}: not within {limit} s")


# --- the checks ---------------------------------------------------------------------------
def service(guest, action):
    """The boot service's own command for `action`, as an administrator would run it."""
    if guest.variant == "systemd":
        return f"systemctl {action} rpi-streamer"
    script = "/etc/init.d/S99rpi-streamer" if guest.variant == "buildroot" else "/etc/init.d/rpi-streamer"
    return f"{script} {action}"


def daemon_pids(guest):
    # A zombie has exited already and only waits for init to reap it: not running.
    rc, out = guest.run("for p in $(pidof rpi-streamer); do"
                        " [ \"$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)\" = Z ] || echo $p; done")
    return out.split()


def check_serving(guest, want, what):
    status = wait_for(f"{what}: GET /", lambda: guest.get("/"), SERVICE_LIMIT, guest)
    if status[0] != 200 or b"<html" not in status[1].lower():
        raise Failure(f"{what}: GET / answered {status[0]}")
    sizes = guest.frames(2)
    for w, h, jpeg in sizes:
        if (w, h) != want or jpeg != want:
            raise Failure(f"{what}: frame of {w}x{h} (JPEG {jpeg}), configured {want[0]}x{want[1]}")


def check_identity(guest):
    pids = daemon_pids(guest)
    if len(pids) != 1:
        raise Failure(f"expected one rpi-streamer process, found {pids}")
    pid = pids[0]
    status = guest.must(f"grep -E '^(Uid|Gid|Groups):' /proc/{pid}/status", "the daemon's ids")
    passwd = guest.must("grep '^rpi-streamer:' /etc/passwd", "the service user")
    groups = guest.must("cat /etc/group", "/etc/group")
    uid, gid = passwd.split(":")[2:4]
    gids = {line.split(":")[0]: line.split(":")[2] for line in groups.splitlines() if line.count(":") >= 3}
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status.splitlines()}
    if set(fields["Uid"]) != {uid} or set(fields["Gid"]) != {gid}:
        raise Failure(f"daemon runs as uid {fields['Uid']} gid {fields['Gid']}, "
                      f"not the service user rpi-streamer ({uid}:{gid})")
    want = {gids["video"], gids["audio"]}
    have = set(fields["Groups"]) - {gid}
    if have != want:
        names = {v: k for k, v in gids.items()}
        raise Failure("daemon's supplementary groups are "
                      f"{sorted(names.get(g, g) for g in have)}, not exactly video and audio")
    ok(f"daemon (pid {pid}) runs as rpi-streamer ({uid}:{gid}) with groups video, audio only")
    return pid


def check_logging(guest):
    if guest.variant == "systemd":
        out = guest.must("journalctl -b -u rpi-streamer -o cat --no-pager", "journalctl")
        if "listening" not in out and "streaming" not in out and "http" not in out.lower():
            raise Failure(f"the journal has no daemon output: {out[-300:]}")
        ok("the daemon logs to the journal")
    else:
        out = guest.must("ls /var/log/; grep -c 'rpi-streamer' /var/log/messages", "syslog")
        if "rpi-streamer.log" in out:
            raise Failure("/var/log/rpi-streamer.log exists: the log grows without bound in RAM")
        if int(out.split()[-1]) < 1:
            raise Failure("nothing from rpi-streamer in /var/log/messages")
        ok(f"the daemon logs to syslog (/var/log/messages, {out.split()[-1]} lines), no log file of its own")
    rc, out = guest.run("ls -l /var/log/rpi-streamer.log 2>/dev/null")
    if rc == 0:
        raise Failure(f"/var/log/rpi-streamer.log exists: {out}")


def check_control(guest, size):
    pid = daemon_pids(guest)[0]
    rc, out = guest.run(service(guest, "stop"))
    if rc != 0:
        raise Failure(f"stop exited {rc}: {out}")
    if daemon_pids(guest):
        raise Failure(f"stop returned but rpi-streamer still runs: {out}")
    if guest.get("/", timeout=5) is not None:
        raise Failure("stop returned but port 8080 still answers")
    ok(f"stop: exit 0, daemon gone, port closed ({out.strip() or 'no output'})")
    rc, out = guest.run(service(guest, "stop"))
    if rc != 0:
        raise Failure(f"stop when stopped exited {rc}: {out}")
    ok(f"stop when stopped: exit 0 ({out.strip() or 'no output'})")
    rc, out = guest.run(service(guest, "start"))
    if rc != 0:
        raise Failure(f"start exited {rc}: {out}")
    check_serving(guest, size, "after start")
    ok(f"start: exit 0, serving frames again ({out.strip() or 'no output'})")
    rc, out = guest.run(service(guest, "start"))
    pids = daemon_pids(guest)
    if rc != 0 or len(pids) != 1:
        raise Failure(f"start when running: exit {rc}, daemons {pids}: {out}")
    ok(f"start when running: exit 0, still one daemon ({out.strip() or 'no output'})")
    before = pids[0]
    rc, out = guest.run(service(guest, "restart"))
    pids = daemon_pids(guest)
    if rc != 0 or len(pids) != 1 or pids[0] == before:
        raise Failure(f"restart: exit {rc}, daemons {pids} (was {before}): {' '.join(out.split())}")
    check_serving(guest, size, "after restart")
    ok(f"restart: exit 0, a new daemon (pid {before} -> {pids[0]}) serving")
    del pid


def check_systemd(guest):
    props = dict(line.split("=", 1) for line in guest.must(
        "systemctl show rpi-streamer -p Type -p ActiveState -p SubState -p StatusText -p NotifyAccess"
        " -p WatchdogUSec -p WatchdogTimestampMonotonic -p ExecMainPID -p NRestarts",
        "systemctl show").splitlines() if "=" in line)
    if props.get("Type") != "notify" or props.get("ActiveState") != "active":
        raise Failure(f"unit: Type={props.get('Type')} ActiveState={props.get('ActiveState')}")
    if not props.get("StatusText", "").startswith("streaming on"):
        raise Failure(f"no READY/STATUS from the daemon: StatusText={props.get('StatusText')!r}")
    ok(f"Type=notify: active with the daemon's status \"{props['StatusText']}\"")
    # Readiness: `systemctl start` returns once the daemon said READY=1, which it does after
    # binding; so the page must be served the moment start returns (/healthz may still say
    # 503 then: no frame yet).
    guest.must("systemctl stop rpi-streamer", "systemctl stop")
    guest.must("systemctl start rpi-streamer && wget -q -O /dev/null http://127.0.0.1:8080/",
               "GET / right after systemctl start")
    ok("readiness: the page is served as soon as systemctl start returns")
    # The watchdog: pings arrive (the timestamp moves), and a daemon that stops pinging is
    # killed and restarted. WatchdogSec=30 is shortened by a runtime drop-in for the second
    # part only (removed afterwards).
    if props.get("WatchdogUSec") not in ("30s", "30000000"):
        raise Failure(f"WatchdogUSec={props.get('WatchdogUSec')}, the unit says 30 s")
    guest.must("mkdir -p /run/systemd/system/rpi-streamer.service.d && printf '[Service]\\nWatchdogSec=6\\n'"
               " >/run/systemd/system/rpi-streamer.service.d/first-boot.conf && systemctl daemon-reload"
               " && systemctl restart rpi-streamer", "a 6 s watchdog")
    first = guest.must("systemctl show -p WatchdogTimestampMonotonic --value rpi-streamer", "watchdog ts")
    time.sleep(4)  # the daemon pings every WatchdogSec/2
    second = guest.must("systemctl show -p WatchdogTimestampMonotonic --value rpi-streamer", "watchdog ts")
    if int(second) <= int(first):
        raise Failure(f"no watchdog ping in 4 s with WatchdogSec=6 (timestamp {first} -> {second})")
    ok("watchdog: pings arrive (WatchdogTimestamp moves)")
    pid = guest.must("systemctl show -p MainPID --value rpi-streamer", "MainPID")
    guest.must(f"kill -STOP {pid}", "SIGSTOP the daemon")

    def restarted():
        out = guest.must("systemctl show -p MainPID -p NRestarts -p ActiveState rpi-streamer", "show")
        p = dict(line.split("=", 1) for line in out.splitlines())
        if p["MainPID"] not in ("0", pid) and int(p["NRestarts"]) >= 1 and p["ActiveState"] == "active":
            return p
        return None

    p = wait_for("a restart after the watchdog fired", restarted, 40, guest)
    journal = guest.must("journalctl -b -u rpi-streamer --no-pager | grep -i watchdog || true", "journal")
    if "timeout" not in journal.lower():
        raise Failure(f"the daemon was restarted, but not by the watchdog: {journal[-300:]}")
    ok(f"watchdog: a stopped daemon (pid {pid}) was killed and restarted (pid {p['MainPID']})")
    guest.must("rm -r /run/systemd/system/rpi-streamer.service.d && systemctl daemon-reload"
               " && systemctl restart rpi-streamer", "removing the drop-in")


def shutdown(guest):
    command = {"buildroot": "poweroff", "sysv": "/sbin/telinit 0", "systemd": "systemctl poweroff"}[guest.variant]
    guest.must(f"(sleep 1; {command}) </dev/null >/dev/null 2>&1 &", "starting the shutdown")
    deadline = time.monotonic() + SHUTDOWN_LIMIT
    while guest.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    if guest.alive():
        raise Failure(f"`{command}` did not power the guest off within {SHUTDOWN_LIMIT} s")
    log = guest.console()
    if "first-boot: shutdown hook done" not in log:
        raise Failure("the shutdown hook did not run (no report on the console)")
    lines = [line for line in log.splitlines() if line.startswith("first-boot-log: ")]
    # What the daemon running at shutdown logged: from its last start on.
    starts = [i for i, line in enumerate(lines) if "listening on" in line]
    if not starts:
        raise Failure("the shutdown report has no daemon start: " + " | ".join(lines[-5:]))
    lines = lines[starts[-1]:]
    if not any("SIGTERM received, shutting down" in line for line in lines):
        raise Failure("at shutdown the daemon was not stopped with SIGTERM: " + " | ".join(lines[-5:]))
    if not any("stopped, exit status 0" in line for line in lines):
        raise Failure("at shutdown the daemon did not exit with status 0: " + " | ".join(lines[-5:]))
    if guest.variant == "systemd":
        unit = dict(line[len("first-boot-unit: "):].split("=", 1) for line in log.splitlines()
                    if line.startswith("first-boot-unit: ") and "=" in line)
        if unit.get("Result") != "success" or unit.get("ExecMainStatus") != "0":
            raise Failure(f"at shutdown systemd saw the daemon end with {unit}")
        ok("clean shutdown: SIGTERM, the daemon exited 0 (systemd: Result=success, ExecMainStatus=0)")
    else:
        stop_line = [line for line in log.splitlines() if "Stopping rpi-streamer" in line]
        if not stop_line or not stop_line[-1].rstrip().endswith("OK"):
            raise Failure(f"the init script's stop at shutdown said {stop_line[-1:]}")
        ok(f"clean shutdown: \"{stop_line[-1].strip()}\", SIGTERM, the daemon logged exit status 0")


def main():
    parser = argparse.ArgumentParser()
    for name in ("--variant", "--kernel", "--dtb", "--initrd", "--log", "--size"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    guest = Guest(args)
    try:
        guest.boot()
        wait_for("the page (GET /) after boot", lambda: guest.get("/", timeout=5), BOOT_LIMIT, guest)
        page = guest.elapsed()
        sizes = guest.frames(3, timeout=60)
        first_frame = guest.elapsed()
        bad = [s for s in sizes if s[:2] != size or s[2] != size]
        if bad:
            raise Failure(f"/stream frames are {bad[0][0]}x{bad[0][1]} (JPEG {bad[0][2]}), configured {args.size}")
        ok(f"GET / at {page:.1f} s after qemu started; first /stream frame at {first_frame:.1f} s; "
           f"3 frames of {args.size}")
        health = guest.get("/healthz")
        if not health or health[0] != 200:
            raise Failure(f"/healthz answered {health and health[0]}")
        ok(f"/healthz: 200 {health[1].decode(errors='replace').strip()[:40]}")
        check_identity(guest)
        check_logging(guest)
        if guest.variant == "systemd":
            check_systemd(guest)
        check_control(guest, size)
        check_identity(guest)
        shutdown(guest)
        print(f"BOOT-TO-FIRST-FRAME {args.variant} {first_frame:.1f} s", flush=True)
    except Failure as e:
        tail = "\n".join(guest.console().splitlines()[-25:])
        print(f"--- serial console (last lines)\n{tail}\n---", flush=True)
        print(f"FAIL: first-boot: {args.variant}: {e}", flush=True)
        sys.exit(1)
    finally:
        guest.kill()


if __name__ == "__main__":
    main()
