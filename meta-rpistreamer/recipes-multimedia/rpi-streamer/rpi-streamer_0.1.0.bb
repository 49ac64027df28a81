SUMMARY = "Low-latency camera and microphone streamer over one WebSocket"
DESCRIPTION = "rpi-streamer streams a Raspberry Pi camera (libcamera), a USB \
               webcam (V4L2) or a synthetic test source, plus a microphone \
               (ALSA), to browsers over one WebSocket at /stream, and serves \
               the browser client itself."
SECTION = "multimedia"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=4ce38049e37c4754fbebc151ebfba27e"

# JPEG encoding links the distro's libjpeg-turbo (libturbojpeg) instead of the
# copy bundled in turbojpeg-sys, which would be built with cmake inside cargo.
DEPENDS += "libjpeg-turbo"

# The source is the git repository this layer lives in (RPI_STREAMER_REPO_DIR,
# captured in conf/layer.conf), at the pinned SRCREV: no git host is needed.
# Set RPI_STREAMER_GIT_URI (and _BRANCH) in local.conf to fetch from a published
# remote instead. scripts/yocto-srcrev moves SRCREV and rewrites the crates .inc;
# for a working tree under development use externalsrc (README.md).
RPI_STREAMER_GIT_URI ??= "git://${RPI_STREAMER_REPO_DIR};protocol=file"
RPI_STREAMER_GIT_BRANCH ??= "main"
# The checkout's location must not change task signatures (sstate reuse).
RPI_STREAMER_REPO_DIR[vardepvalue] = "rpi-streamer"

SRC_URI = "${RPI_STREAMER_GIT_URI};branch=${RPI_STREAMER_GIT_BRANCH};destsuffix=${BP}"
SRCREV = "f2167f3be992c26e09947c4cb1056f52e41913c0"

require ${BPN}-crates.inc

# Kept equal to rust-version in Cargo.toml by scripts/checks/yocto.
RPI_STREAMER_MIN_RUST = "1.89"

inherit cargo cargo-update-recipe-crates systemd update-rc.d useradd

# Capture backends and the H.264 encoder are cargo features (scripts/checks/yocto
# keeps this list and Cargo.toml's [features] in step). libcamera comes from
# meta-multimedia, so it is on by default only when that layer is in the build;
# its bindings are made by bindgen, which needs libclang from clang-native.
# h264 builds Cisco's OpenH264 from the source bundled in the openh264-sys2 crate
# with the target's C++ compiler (the cc crate uses the CXX cargo_common exports)
# and links the target's libstdc++ (virtual/compilerlibs, a default dependency).
PACKAGECONFIG ??= "alsa v4l h264 tls ${@bb.utils.contains('BBFILE_COLLECTIONS', 'multimedia-layer', 'libcamera', '', d)}"
PACKAGECONFIG[alsa] = "--features alsa,,alsa-lib"
PACKAGECONFIG[h264] = "--features h264,,virtual/cross-c++"
PACKAGECONFIG[libcamera] = "--features libcamera,,libcamera clang-native"
# rustls with the ring provider (its C and assembly built by the cc crate for the target).
PACKAGECONFIG[tls] = "--features tls"
PACKAGECONFIG[v4l] = "--features v4l,,clang-native"
# Cargo.toml's default features (h264) are PACKAGECONFIG's to choose: without
# this, removing h264 from PACKAGECONFIG would still build it.
CARGO_BUILD_FLAGS += "--no-default-features"

# The crate's release profile strips the binary; OE strips it itself (keeping
# the symbols for -dbg), and its QA rejects an already-stripped binary.
export CARGO_PROFILE_RELEASE_STRIP = "false"

export TURBOJPEG_SOURCE = "explicit"
export TURBOJPEG_DYNAMIC = "1"
export TURBOJPEG_LIB_DIR = "${STAGING_LIBDIR}"
export TURBOJPEG_INCLUDE_DIR = "${STAGING_INCDIR}"

# bindgen (libcamera bindings) loads libclang from the native sysroot and must
# parse the target's headers, not the build host's.
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET} ${TUNE_CCARGS}"

# The camera the boot service streams (--camera-type in /etc/default/rpi-streamer): the Pi
# camera when the libcamera backend is built, else a USB webcam when the V4L2 one is, else
# the synthetic test pattern, so that the service never runs a backend the binary lacks
# (Buildroot's BR2_PACKAGE_RPI_STREAMER_ARGS defaults the same way).
RPI_STREAMER_CAMERA_TYPE ??= "${@bb.utils.contains('PACKAGECONFIG', 'libcamera', 'rpi', bb.utils.contains('PACKAGECONFIG', 'v4l', 'usb', 'test', d), d)}"

# Secrets for the image: paths on the build machine (e.g. in local.conf) of a file holding the
# --auth-token value and of one holding the --basic-auth USER:PASSWORD. Each is installed in
# /etc/rpi-streamer/ (mode 0640 root:rpi-streamer, the folder 0750) and passed to the daemon
# by name with --auth-token-file / --basic-auth-file: every local user can read a command
# line, and /etc/default/rpi-streamer. Empty: none. A secret set here is in the package
# and the sstate cache; to keep it off the build machine, write the file on the board.
# "1": the boot service serves HTTPS on port 8443 with a certificate it makes on first boot
# (--tls-self-signed, kept in /var/lib/rpi-streamer): browsers decode H.264 with WebCodecs
# only on a secure page. Needs tls in PACKAGECONFIG.
RPI_STREAMER_HTTPS ??= "0"

RPI_STREAMER_AUTH_TOKEN_FILE ??= ""
RPI_STREAMER_BASIC_AUTH_FILE ??= ""
# A changed secret reinstalls the package.
do_install[file-checksums] += "${@' '.join('%s:True' % f for f in (d.getVar('RPI_STREAMER_AUTH_TOKEN_FILE'), d.getVar('RPI_STREAMER_BASIC_AUTH_FILE')) if f)}"

do_install:append() {
    install -d ${D}${datadir}/rpi-streamer/public
    cp -R --no-preserve=ownership ${S}/public/. ${D}${datadir}/rpi-streamer/public/

    install -D -m 0644 ${S}/dist/rpi-streamer.default ${D}${sysconfdir}/default/rpi-streamer
    sed -i 's|^RPI_STREAMER_ARGS="--camera-type [a-z]* |RPI_STREAMER_ARGS="--camera-type ${RPI_STREAMER_CAMERA_TYPE} |' \
        ${D}${sysconfdir}/default/rpi-streamer
    grep -q '^RPI_STREAMER_ARGS="--camera-type ${RPI_STREAMER_CAMERA_TYPE} ' ${D}${sysconfdir}/default/rpi-streamer

    if [ "${RPI_STREAMER_HTTPS}" = "1" ]; then
        sed -i 's|^RPI_STREAMER_ARGS="\(.*\)"$|RPI_STREAMER_ARGS="\1 --tls-self-signed --port 8443"|' \
            ${D}${sysconfdir}/default/rpi-streamer
    fi
    # The state directory (--tls-self-signed's certificate) for the SysV script; systemd's
    # StateDirectory= makes the same one.
    install -d -m 0700 -o rpi-streamer -g rpi-streamer ${D}${localstatedir}/lib/rpi-streamer

    install -d -m 0750 -o root -g rpi-streamer ${D}${sysconfdir}/rpi-streamer
    if [ -n "${RPI_STREAMER_AUTH_TOKEN_FILE}" ]; then
        install -m 0640 -o root -g rpi-streamer "${RPI_STREAMER_AUTH_TOKEN_FILE}" ${D}${sysconfdir}/rpi-streamer/auth-token
        sed -i 's|^RPI_STREAMER_ARGS="\(.*\)"$|RPI_STREAMER_ARGS="\1 --auth-token-file ${sysconfdir}/rpi-streamer/auth-token"|' \
            ${D}${sysconfdir}/default/rpi-streamer
    fi
    if [ -n "${RPI_STREAMER_BASIC_AUTH_FILE}" ]; then
        install -m 0640 -o root -g rpi-streamer "${RPI_STREAMER_BASIC_AUTH_FILE}" ${D}${sysconfdir}/rpi-streamer/basic-auth
        sed -i 's|^RPI_STREAMER_ARGS="\(.*\)"$|RPI_STREAMER_ARGS="\1 --basic-auth-file ${sysconfdir}/rpi-streamer/basic-auth"|' \
            ${D}${sysconfdir}/default/rpi-streamer
    fi

    # Both are installed; the systemd and update-rc.d classes drop the one the
    # distro's init manager does not use.
    install -D -m 0644 ${S}/dist/rpi-streamer.service ${D}${systemd_system_unitdir}/rpi-streamer.service
    install -D -m 0755 ${S}/dist/rpi-streamer.init ${D}${INIT_D_DIR}/rpi-streamer
}

CONFFILES:${PN} = "${sysconfdir}/default/rpi-streamer \
                   ${@'${sysconfdir}/rpi-streamer/auth-token' if d.getVar('RPI_STREAMER_AUTH_TOKEN_FILE') else ''} \
                   ${@'${sysconfdir}/rpi-streamer/basic-auth' if d.getVar('RPI_STREAMER_BASIC_AUTH_FILE') else ''}"

# A system user in the video and audio groups, as the unit's User= expects.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /nonexistent \
                       --shell /sbin/nologin --user-group --groups video,audio \
                       rpi-streamer"

SYSTEMD_SERVICE:${PN} = "rpi-streamer.service"
INITSCRIPT_NAME = "rpi-streamer"
INITSCRIPT_PARAMS = "defaults 90 10"

CVE_PRODUCT = "rpi-streamer"

# nooelint: oelint.task.noanonpython - refusing early with the reason beats a cargo error an hour in
python () {
    # e.g. scarthgap's Rust 1.75 without a newer Rust mixin layer.
    rust = (d.getVar('RUSTVERSION') or '').rstrip('%')
    need = d.getVar('RPI_STREAMER_MIN_RUST')
    if rust and bb.utils.vercmp_string_op(rust, need, '<'):
        raise bb.parse.SkipRecipe('needs Rust >= %s, this build has RUSTVERSION %s' % (need, rust))
    if d.getVar('RPI_STREAMER_HTTPS') == '1' and not bb.utils.contains('PACKAGECONFIG', 'tls', True, False, d):
        bb.fatal('RPI_STREAMER_HTTPS = "1" needs tls in PACKAGECONFIG')
}
