#!/usr/bin/env python3
"""Packs a root directory into an initramfs (newc cpio) without needing root.

    mkcpio.py ROOT OUT.cpio [OWNERS]

Every file is owned by root (0:0) except those OWNERS lists, one `PATH UID GID` a line
(PATH absolute inside ROOT): the install steps under test ask for owners (`install -o root
-g rpi-streamer`, Buildroot's permission table) that the assembling user may not be able to
give. /dev/console is added: the kernel opens it for the first process.
"""
import os
import stat
import sys


def header(out, ino, mode, uid, gid, nlink, mtime, size, rdev_major, rdev_minor, name):
    name_b = name.encode() + b"\0"
    fields = [ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev_major, rdev_minor, len(name_b), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(name_b)
    out.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))


def main():
    root, dest = sys.argv[1], sys.argv[2]
    owners = {}
    if len(sys.argv) > 3:
        with open(sys.argv[3]) as f:
            for line in f:
                if line.strip():
                    path, uid, gid = line.split()
                    owners[path.rstrip("/") or "/"] = (int(uid), int(gid))
    ino = 1
    with open(dest, "wb") as out:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in [None] + sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = dirpath if name is None else os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                if rel == ".":
                    continue
                st = os.lstat(full)
                uid, gid = owners.get("/" + rel, (0, 0))
                data = b""
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(full).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        data = f.read()
                header(out, ino, st.st_mode, uid, gid, 1, int(st.st_mtime), len(data), 0, 0, rel)
                out.write(data)
                out.write(b"\0" * ((4 - len(data) % 4) % 4))
                ino += 1
        if not os.path.lexists(os.path.join(root, "dev/console")):
            if not os.path.isdir(os.path.join(root, "dev")):
                header(out, ino, stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, 0, "dev")
                ino += 1
            header(out, ino, stat.S_IFCHR | 0o600, 0, 0, 1, 0, 0, 5, 1, "dev/console")
            ino += 1
        header(out, 0, 0, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!")
    missing = [p for p in owners if not os.path.lexists(os.path.join(root, p.lstrip("/")))]
    if missing:
        sys.exit("mkcpio: owners for missing paths: " + " ".join(missing))


main()
