#!/usr/bin/env bash
# Installs what hannoy needs to build and test (Debian packages), then builds
# and installs the extension.  Idempotent: packages already present are not
# touched, and make only rebuilds what changed.
#
#   bash scripts/setup.sh             as root, from any directory
#   WERROR=1 bash scripts/setup.sh    compiler warnings are errors (CI)
set -euo pipefail

# Everything the build, the three test layers and the benchmarks use.
readonly PACKAGES=(
	build-essential
	postgresql-15
	postgresql-contrib
	postgresql-server-dev-15
	libpq-dev
	liblmdb-dev
	lmdb-utils
	libroaring-dev
	zlib1g-dev
	libgtest-dev
	cmake
	clang-format
	libipc-run-perl
	libhnswlib-dev
	dataset-fashion-mnist
	gnuplot-nox
	python3-numpy
)

# Prints a progress line, prefixed so that it stands out in CI logs.
say() {
	printf '==> %s\n' "$*"
}

# Prints an error and exits non-zero.
die() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	exit 1
}

# Prints, one per line, the packages of PACKAGES that are not installed.
missing_packages() {
	local pkg status
	for pkg in "${PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
		if [[ $status != installed ]]; then
			printf '%s\n' "$pkg"
		fi
	done
}

# Installs the missing packages with apt-get, without prompts or recommends.
install_packages() {
	local missing
	mapfile -t missing < <(missing_packages)
	if ((${#missing[@]} == 0)); then
		say "packages: all ${#PACKAGES[@]} installed"
		return 0
	fi
	((EUID == 0)) || die "missing packages (${missing[*]}); run as root to install them"
	say "packages: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Builds the extension with PGXS and installs it into PostgreSQL 15.
build_and_install() {
	local werror=${WERROR:-0}
	say "build: make -j2 WERROR=$werror"
	make -s -j2 WERROR="$werror"
	say "install: make install"
	make -s install
}

main() {
	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	command -v dpkg-query >/dev/null || die "this script expects a Debian system"
	install_packages
	# PGXS finds PostgreSQL 15 through pg_config; the PATH one may be missing
	# or belong to another major version.
	export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
	build_and_install
	say "setup: done"
}

main "$@"
