# shellcheck shell=bash
# Shared helpers for the project's scripts. Source it: `. "$(dirname "$0")/lib.sh"`.

# For a check that goes on after a failure, to report every problem in one run:
# check_fail prints one `FAIL: <cause>` line (scripts/test repeats the first) and counts it,
# check_pass prints `ok   <what held>` and counts it, check_done NAME ends the check with the
# counts (exit 1 after any failure).
check_failures=0
check_passes=0
check_fail() {
	echo "FAIL: $*"
	check_failures=$((check_failures + 1))
}
check_pass() {
	echo "ok   $*"
	check_passes=$((check_passes + 1))
}
check_done() {
	if [ "$check_failures" -ne 0 ]; then
		echo "$1: $check_failures failure(s), $check_passes passed"
		exit 1
	fi
	if [ "$check_passes" -ne 0 ]; then
		echo "$1: all $check_passes checks passed"
	else
		echo "$1: passed"
	fi
}

# Install Debian packages that are missing (quietly, idempotent). Needs root or sudo. On
# failure the last line printed names the packages and what apt said (a registry that
# refused, a package the mirror does not have), and it returns 1.
need_apt() {
	missing=""
	for pkg in "$@"; do
		apt_installed "$pkg" || missing="$missing $pkg"
	done
	[ -z "$missing" ] && return 0
	sudo_cmd=""
	[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
	echo "installing:$missing"
	apt_log="$(mktemp)"
	if [ ! -e /tmp/.rpi-streamer-apt-updated ]; then
		# A mirror index may be mid-sync: retry once.
		if $sudo_cmd apt-get update -qq >"$apt_log" 2>&1 ||
			{ sleep 5 && $sudo_cmd apt-get update -qq >"$apt_log" 2>&1; }; then
			touch /tmp/.rpi-streamer-apt-updated
		else
			apt_failed "apt-get update failed (a package registry refused or is unreachable)" "$apt_log"
			return 1
		fi
	fi
	# shellcheck disable=SC2086
	if ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
		$missing >"$apt_log" 2>&1; then
		apt_failed "apt-get could not install:$missing" "$apt_log"
		return 1
	fi
	rm -f "$apt_log"
}

# True if `pkg` is installed for this machine's architecture (or is arch-independent). A
# bare name matches every architecture's instance in dpkg-query, so once the cross check has
# installed, say, libyuv-dev:arm64, a plain status check would take the missing native
# libyuv-dev for installed. `pkg:arch` asks for that architecture.
apt_installed() {
	local arch_re
	arch_re="($(dpkg --print-architecture)|all)"
	case "$1" in *:*) arch_re="[^ ]+" ;; esac
	dpkg-query -W -f='${Status} ${Architecture}\n' "$1" 2>/dev/null |
		grep -qE "^install ok installed $arch_re\$"
}

# The closing line of a failed apt step: what failed, and apt's own first error.
apt_failed() {
	tail -n 5 "$2" >&2
	echo "FAIL: $1: $(grep -m1 -E '^(E|Err):' "$2" || tail -n 1 "$2")" >&2
	rm -f "$2"
	failure_reported=1
}

# A command failing under `set -e` ends a script: its last line then says which command and
# where, unless a FAIL: line naming the cause was printed already.
failure_reported=""
# shellcheck disable=SC2154 # assigned inside the trap
trap 'failed_status=$?; [ -n "$failure_reported" ] || echo "FAIL: ${0#./}: \`$BASH_COMMAND\` exited $failed_status (line $LINENO)" >&2' ERR

# Print a section heading so long CI logs stay readable.
section() {
	printf '\n==== %s ====\n' "$*"
}
