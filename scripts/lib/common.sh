# shellcheck shell=bash
# What scripts/demo.sh and bench/run.sh share besides the cluster: progress
# and error messages, timing, the root check, running scripts/setup.sh, and
# building the C++ programs of tools/ and bench/.  Sourced, not run; the
# sourcing script sets ROOT (the checkout) first and runs with set -euo pipefail.

# HANNOY_PG_BIN points the scripts at another PostgreSQL 15 installation (a
# relocated copy with its own hannoy build, say) than Debian's.
readonly PG_BIN=${HANNOY_PG_BIN:-/usr/lib/postgresql/15/bin}

# Prints a progress line, prefixed so that it stands out.
say() {
	printf '\n==> %s\n' "$*"
}

# Prints an error, prefixed with the script's name, and exits non-zero.
die() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

# Prints the seconds elapsed since the epoch time $1 (from 'date +%s.%N').
seconds_since() {
	awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - start }'
}

# Exits unless the script runs as root (the cluster runs as the postgres user).
require_root() {
	((EUID == 0)) || die "run as root (the cluster runs as the postgres user): sudo bash $0"
}

# Installs the packages and builds and installs the extension (scripts/setup.sh,
# skipped with HANNOY_SKIP_SETUP=1), then checks that the extension is
# installed and that a cluster can run as the postgres user.
run_setup() {
	if [[ ${HANNOY_SKIP_SETUP:-0} == 1 ]]; then
		say "setup: skipped (HANNOY_SKIP_SETUP=1)"
	else
		say "setup: bash scripts/setup.sh"
		bash "$ROOT/scripts/setup.sh"
	fi
	[[ -f $("$PG_BIN/pg_config" --pkglibdir)/hannoy.so ]] ||
		die "hannoy.so is not installed in $("$PG_BIN/pg_config" --pkglibdir); did scripts/setup.sh fail?"
	command -v runuser >/dev/null || die "runuser (util-linux) is missing"
	id postgres >/dev/null 2>&1 || die "there is no postgres OS user (is postgresql-15 installed?)"
}

# Builds the C++ program $1 from the source file $2 (C++17, -O3, warnings on;
# the remaining arguments are added to the g++ command line: flags, libraries),
# unless $1 is newer than $2 and than every header of tools/ and bench/.
build_program() {
	local out=$1 src=$2 dep up_to_date=0
	shift 2
	if [[ -x $out ]]; then
		up_to_date=1
		for dep in "$src" "$ROOT"/tools/*.hpp "$ROOT"/bench/*.hpp; do
			[[ $out -nt $dep ]] || up_to_date=0
		done
	fi
	if ((up_to_date)); then
		say "build: $out is up to date"
		return 0
	fi
	say "build: $out"
	mkdir -p "$(dirname "$out")"
	g++ -std=c++17 -O3 -pthread -Wall -Wextra -o "$out" "$src" "$@"
}
