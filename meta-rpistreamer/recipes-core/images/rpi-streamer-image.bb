SUMMARY = "Small Raspberry Pi image that streams the camera and microphone at boot"
DESCRIPTION = "core-image-minimal plus rpi-streamer (started at boot by its \
               systemd unit or init script), the kernel modules for cameras \
               and sound, and a few tools to check them by hand."
LICENSE = "MIT"

inherit core-image

# core-image-minimal's contents (packagegroup-core-boot), plus:
# - kernel-modules: the CSI receiver (unicam / rp1-cfe), the sensor drivers
#   (imx219, imx708, ...), uvcvideo for USB webcams and snd-usb-audio for USB
#   microphones are modules on meta-raspberrypi kernels. Wi-Fi/Bluetooth
#   firmware comes with the machine (MACHINE_EXTRA_RRECOMMENDS), the GPU
#   firmware and config.txt with the boot partition (rpi-bootfiles, rpi-config).
IMAGE_INSTALL = "packagegroup-core-boot ${CORE_IMAGE_EXTRA_INSTALL} \
                 rpi-streamer kernel-modules ${RPI_STREAMER_IMAGE_TOOLS}"
IMAGE_LINGUAS = ""

# Tools to check the hardware by hand: arecord (alsa-utils-aplay), v4l2-ctl
# (v4l-utils, meta-oe) and rpicam-hello (libcamera-apps, meta-raspberrypi with
# meta-multimedia). Set to "" in local.conf for the smallest image.
RPI_STREAMER_IMAGE_TOOLS ?= "alsa-utils-aplay \
                             ${@bb.utils.contains('BBFILE_COLLECTIONS', 'openembedded-layer', 'v4l-utils', '', d)} \
                             ${@bb.utils.contains('BBFILE_COLLECTIONS', 'multimedia-layer', 'libcamera-apps', '', d)}"

IMAGE_ROOTFS_SIZE ?= "8192"
# Room for logs and a few captures (KiB).
IMAGE_ROOTFS_EXTRA_SPACE = "65536"

# nooelint: oelint.task.noanonpython - skip cleanly (e.g. in world builds) without meta-raspberrypi
python () {
    if 'raspberrypi' not in (d.getVar('BBFILE_COLLECTIONS') or '').split():
        raise bb.parse.SkipRecipe('rpi-streamer-image needs the meta-raspberrypi layer')
}
