#!/bin/sh
# Post-build script of the rpi-streamer images, run after Buildroot's own
# board/raspberrypi*/post-build.sh with the target directory as $1.
#
# Options (BR2_ROOTFS_POST_SCRIPT_ARGS):
#   --wifi IFACE  bring IFACE up at boot with wpa_supplicant and DHCP. The
#                 networks come from the file named by RPI_STREAMER_WPA_CONF
#                 in make's environment, if set, copied to
#                 /etc/wpa_supplicant.conf; otherwise edit that file on the
#                 card.
set -eu

TARGET="$1"
shift
wifi=""
while [ $# -gt 0 ]; do
	case "$1" in
	--wifi)
		wifi="$2"
		shift 2
		;;
	*)
		shift
		;;
	esac
done

fail() {
	echo "rpi-streamer post-build: $*" >&2
	exit 1
}

# The image is only useful if the streamer and its boot service are in it.
[ -x "$TARGET/usr/bin/rpi-streamer" ] || fail "/usr/bin/rpi-streamer is missing"
grep -q '^RPI_STREAMER_ARGS=' "$TARGET/etc/default/rpi-streamer" ||
	fail "/etc/default/rpi-streamer has no RPI_STREAMER_ARGS"
[ -x "$TARGET/etc/init.d/S99rpi-streamer" ] ||
	[ -f "$TARGET/usr/lib/systemd/system/rpi-streamer.service" ] ||
	fail "no boot service for rpi-streamer"

if [ -n "$wifi" ]; then
	[ -x "$TARGET/usr/sbin/wpa_supplicant" ] ||
		fail "--wifi $wifi needs BR2_PACKAGE_WPA_SUPPLICANT"
	if [ -n "${RPI_STREAMER_WPA_CONF:-}" ]; then
		install -m 0600 "$RPI_STREAMER_WPA_CONF" "$TARGET/etc/wpa_supplicant.conf"
	fi
	interfaces="$TARGET/etc/network/interfaces"
	if ! grep -q "^iface $wifi " "$interfaces"; then
		# wpa_supplicant must associate before udhcpc asks for a lease.
		cat >>"$interfaces" <<-STANZA

		auto $wifi
		iface $wifi inet dhcp
		  pre-up wpa_supplicant -B -i $wifi -c /etc/wpa_supplicant.conf -P /var/run/wpa_supplicant.$wifi.pid
		  post-down start-stop-daemon -K -q -p /var/run/wpa_supplicant.$wifi.pid
		STANZA
	fi
fi
