# Shared shell helpers for the project's scripts. Source, don't run.
# shellcheck shell=bash

# Prints a step banner.
step() { printf '\n==> %s\n' "$*"; }

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when already root, else through sudo.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the named Debian packages that are missing; apt-get update once.
ensure_debs() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	step "installing Debian packages: ${missing[*]}"
	if [ -z "${_APT_UPDATED:-}" ]; then
		as_root apt-get update -qq
		_APT_UPDATED=1
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs a cargo tool (`cargo install --locked CRATE`) if BIN is missing.
ensure_cargo_tool() {
	local bin=$1 crate=$2
	command -v "$bin" >/dev/null 2>&1 && return 0
	step "installing $crate with cargo (one time)"
	cargo install --locked --quiet "$crate"
}

# The repository root.
repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# parse_repeat DIE ARGS...: reads one "--repeat N" from the front of ARGS.
# With it, N must be a positive count (else DIE "--repeat needs a positive
# count"): sets REPEAT=N and REPEAT_SHIFT=2. Without it, leaves REPEAT as it
# is and sets REPEAT_SHIFT=0. The caller shifts its arguments by REPEAT_SHIFT.
# shellcheck disable=SC2034 # REPEAT and REPEAT_SHIFT are read by the caller
parse_repeat() {
	local die=$1
	shift
	REPEAT_SHIFT=0
	[[ ${1:-} == --repeat ]] || return 0
	[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || "$die" "--repeat needs a positive count"
	REPEAT=$2
	REPEAT_SHIFT=2
}
