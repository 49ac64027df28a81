# shellcheck shell=bash
# Shared helpers for the project's scripts. Source it: `. "$(dirname "$0")/lib.sh"`.

# Install Debian packages that are missing (quietly, idempotent). Needs root or sudo.
need_apt() {
	missing=""
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $pkg"
	done
	[ -z "$missing" ] && return 0
	sudo_cmd=""
	[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
	echo "installing:$missing"
	if [ ! -e /tmp/.rpi-streamer-apt-updated ]; then
		# A mirror index may be mid-sync: retry once.
		$sudo_cmd apt-get update -qq || { sleep 5; $sudo_cmd apt-get update -qq; } || return 1
		touch /tmp/.rpi-streamer-apt-updated
	fi
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Print a section heading so long CI logs stay readable.
section() {
	printf '\n==== %s ====\n' "$*"
}
