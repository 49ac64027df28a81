# The image `cross` builds rpi-streamer in (Cross.toml): Debian 12, Debian's cross gcc/g++ and
# qemu-user (scripts/cross-deps), the target's ALSA, and libcamera built for the target from
# Debian's source (scripts/libcamera/build --target), so `--features rpi` cross-builds and
# `cross test` runs the virtual-camera tests under qemu. The same two scripts, with the same
# packages, are what CI runs outside a container (scripts/checks/cross).
#
# cross builds it with the repository as context and these build arguments:
#   BASE_IMAGE         debian:bookworm unless changed (cross passes CROSS_BASE_IMAGE, its own
#                      Ubuntu image, which this file ignores on purpose: docs/cross.md)
#   TARGET             the Rust target triple (Cross.toml, per target)
#   LIBCAMERA_VERSION  a Debian source version of libcamera (sid or trixie; empty: sid's).
#                      A binary links libcamera.so.0.<minor>: the minor version must be the
#                      one the Pi runs (docs/cross.md, "libcamera").
ARG BASE_IMAGE=debian:bookworm
FROM $BASE_IMAGE
ARG TARGET
ARG LIBCAMERA_VERSION=

COPY scripts/lib.sh scripts/cross-deps /opt/rpi-streamer/scripts/
COPY scripts/libcamera/ /opt/rpi-streamer/scripts/libcamera/
RUN /opt/rpi-streamer/scripts/cross-deps "$TARGET" && rm -rf /var/lib/apt/lists/*
RUN LIBCAMERA_VERSION="$LIBCAMERA_VERSION" /opt/rpi-streamer/scripts/libcamera/build \
        --target "$TARGET" --prefix "/opt/libcamera-$TARGET" >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 1777 "/opt/libcamera-$TARGET/share/libcamera/pipeline/virtual" \
        "/opt/libcamera-$TARGET/share/rpi-streamer-tests"

# cross runs the build as the calling user: the virtual-camera tests write their camera list
# and frames into the prefix (the folders made world-writable above). LD_LIBRARY_PATH is for
# `cross test` (qemu's guest loader); the binary itself records only libcamera's soname.
ENV LIBCAMERA_PREFIX=/opt/libcamera-$TARGET \
    LD_LIBRARY_PATH=/opt/libcamera-$TARGET/lib
