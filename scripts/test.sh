#!/usr/bin/env bash
# Runs hannoy's whole test suite: builds and installs the extension
# (scripts/setup.sh), then three layers, and counts each test case:
#
#   style    clang-format --dry-run -Werror over every C/C++ source, and the
#            layering rules (scripts/check_layers.sh): two checks
#   unit     the core's GoogleTest suite (make unittest / ctest): ctest tests
#   regress  pg_regress on test/sql/*.sql against expected/*.out: SQL files
#   tap      prove on test/t/*.pl (PostgreSQL::Test::Cluster): test files
#
# The last line printed is "N passed, N failed"; the exit status is 0 only if
# nothing failed and at least one test ran.
#
# PostgreSQL refuses to run as root, and the checkout may sit where the
# postgres user cannot read it, so when run as root the regress and tap
# layers copy their files into a postgres-owned temporary directory and run
# as postgres there.
#
# Environment:
#   HANNOY_TEST_LAYERS     layers to run (default "style unit regress tap")
#   HANNOY_REGRESS_TESTS   subset of regression tests ("00_smoke 10_build")
#   HANNOY_TAP_TESTS       subset of TAP files ("000_smoke.pl t/010_wal.pl")
#   HANNOY_SKIP_SETUP=1    do not run scripts/setup.sh (already built)
#   HANNOY_KEEP_TMP=1      keep the temporary directory (path is printed)
#   HANNOY_SMALL_FS_MB     size of the small file system the full-disk test
#                          fills (default 16); it is mounted (tmpfs) only when
#                          run as root, else that test is skipped
#   HANNOY_STANDBY_KILLS   immediate stops of the standby during replay in
#                          220_standby_copies.pl (default 5)
#   HANNOY_PG_BIN          bin directory of the PostgreSQL 15 to test against (with
#                          HANNOY_SKIP_SETUP=1: a relocated copy the build went into)
#   CI=true                build with WERROR=1
set -euo pipefail

readonly PG_BIN=${HANNOY_PG_BIN:-/usr/lib/postgresql/15/bin}
readonly PGXS_DIR=$PG_BIN/../lib/pgxs
readonly PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
readonly PG_PERL=$PGXS_DIR/src/test/perl

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
TOP= # the temporary directory; every layer stages under it
SMALL_FS= # a small tmpfs for the full-disk test, mounted while TAP runs
TOTAL_PASSED=0
TOTAL_FAILED=0

# Prints a progress line, prefixed so that it stands out in CI logs.
say() {
	printf '==> %s\n' "$*"
}

# Adds a layer's counts to the totals and reports them.
record() {
	local layer=$1 passed=$2 failed=$3 unit=$4
	TOTAL_PASSED=$((TOTAL_PASSED + passed))
	TOTAL_FAILED=$((TOTAL_FAILED + failed))
	say "$layer: $passed $unit passed, $failed failed"
}

# Runs a command as the postgres OS user when we are root (PostgreSQL will
# not run as root), and as ourselves otherwise.
as_pg() {
	if ((EUID == 0)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Creates a directory under TOP that the user running PostgreSQL owns.
make_stage() {
	local dir=$TOP/$1
	mkdir -p "$dir"
	if ((EUID == 0)); then
		chown -R postgres: "$dir"
	fi
	printf '%s\n' "$dir"
}

# Hands a staged directory (after copying files into it) to postgres.
own_stage() {
	if ((EUID == 0)); then
		chown -R postgres: "$1"
	fi
}

# Prints a TCP port in 20000-40000 on which nothing listens and for which no
# socket file exists in /tmp.
free_port() {
	local port tries
	for ((tries = 0; tries < 500; tries++)); do
		port=$((20000 + RANDOM % 20001))
		[[ -e /tmp/.s.PGSQL.$port ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	echo "test.sh: no free port found" >&2
	return 1
}

# Stops every PostgreSQL server whose data directory lies under TOP: a test
# that was interrupted or crashed may leave one running.
stop_servers() {
	local pidfile
	[[ -n $TOP && -d $TOP ]] || return 0
	while IFS= read -r -d '' pidfile; do
		as_pg "$PG_BIN/pg_ctl" stop -D "$(dirname "$pidfile")" -m immediate -w \
			>/dev/null 2>&1 || true
	done < <(find "$TOP" -name postmaster.pid -print0 2>/dev/null)
}

# Stops leftover servers and removes the temporary directory; runs on every
# exit, including failures and interrupts.
cleanup() {
	stop_servers
	unmount_small_fs
	if [[ -n $TOP && -d $TOP ]]; then
		if [[ ${HANNOY_KEEP_TMP:-0} == 1 ]]; then
			echo "test.sh: kept $TOP" >&2
		else
			rm -rf "$TOP"
		fi
	fi
	TOP=
}

# Prints its arguments one per line, in C-locale (byte) order.
sorted() {
	printf '%s\n' "$@" | LC_ALL=C sort
}

# Layer a: builds the core's GoogleTest suite with cmake and runs it with
# ctest; counts ctest's tests. A build that fails counts as one failure.
run_unit() {
	local log=$TOP/unit.log rc=0 summary total failed
	if [[ ! -f $ROOT/test/core/CMakeLists.txt ]]; then
		say "unit: no test/core/CMakeLists.txt, skipped"
		return 0
	fi
	say "unit: make unittest"
	# The Makefile turns any non-empty WERROR (even 0) into -Werror for the
	# core tests, so WERROR is passed only when it is 1.
	if [[ $WERROR == 1 ]]; then
		(cd "$ROOT" && make -s unittest WERROR=1) 2>&1 | tee "$log" || rc=$?
	else
		(cd "$ROOT" && env -u WERROR make -s unittest) 2>&1 | tee "$log" || rc=$?
	fi
	summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
	if [[ -z $summary ]]; then
		if ((rc != 0)); then
			say "unit: the core tests did not build or ctest did not run"
			record unit 0 1 tests
		else
			record unit 0 0 tests
		fi
		return 0
	fi
	failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")
	total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$summary")
	record unit $((total - failed)) "$failed" tests
}

# Prints the names of the regression tests to run (test/sql/*.sql, sorted, or
# HANNOY_REGRESS_TESTS).
regress_tests() {
	local file names=()
	if [[ -n ${HANNOY_REGRESS_TESTS:-} ]]; then
		read -r -a names <<<"$HANNOY_REGRESS_TESTS"
		for file in "${names[@]}"; do
			file=${file##*/}
			printf '%s\n' "${file%.sql}"
		done
		return 0
	fi
	for file in "$ROOT"/test/sql/*.sql; do
		[[ -e $file ]] || continue
		file=${file##*/}
		names+=("${file%.sql}")
	done
	((${#names[@]} == 0)) || sorted "${names[@]}"
}

# Layer b: runs pg_regress with a temporary instance that preloads hannoy;
# counts each test's "ok" or "FAILED" line. On failure prints the diffs.
run_regress() {
	local stage log port rc=0 passed failed test tests
	mapfile -t tests < <(regress_tests)
	if ((${#tests[@]} == 0)); then
		say "regress: no test/sql/*.sql, skipped"
		return 0
	fi
	stage=$(make_stage regress)
	log=$TOP/regress.log
	mkdir -p "$stage/sql" "$stage/expected" "$stage/out"
	cp "$ROOT"/test/sql/*.sql "$stage/sql/"
	if compgen -G "$ROOT/expected/*.out" >/dev/null; then
		cp "$ROOT"/expected/*.out "$stage/expected/"
	fi
	# A test without an expected file fails with its whole output in
	# regression.diffs, instead of stopping pg_regress.
	for test in "${tests[@]}"; do
		if [[ ! -e $stage/expected/$test.out ]]; then
			say "regress: expected/$test.out is missing"
			: >"$stage/expected/$test.out"
		fi
	done
	# Data files for \copy, reachable from SQL through \getenv abs_srcdir PG_ABS_SRCDIR.
	if [[ -d $ROOT/test/data ]]; then
		cp -r "$ROOT/test/data" "$stage/data"
	fi
	cat >"$stage/hannoy.conf" <<-'EOF'
		shared_preload_libraries = 'hannoy'
		max_prepared_transactions = 10
	EOF
	own_stage "$stage"
	port=$(free_port)
	say "regress: pg_regress on port $port: ${tests[*]}"
	(cd "$stage" && as_pg "$PG_REGRESS" \
		--temp-instance="$stage/tmp_instance" \
		--temp-config="$stage/hannoy.conf" \
		--bindir="$PG_BIN" \
		--inputdir="$stage" \
		--outputdir="$stage/out" \
		--port="$port" \
		--encoding=UTF8 --no-locale \
		"${tests[@]}") 2>&1 | tee "$log" || rc=$?
	passed=$(grep -cE '\.\.\. ok( |$)' "$log" || true)
	failed=$(grep -cE '\.\.\. FAILED( |$)' "$log" || true)
	if ((rc != 0 && failed == 0)); then
		failed=1 # pg_regress failed before running a test (initdb, server start)
	fi
	if ((rc != 0)); then
		show_regress_failure "$stage/out"
	fi
	record regress "$passed" "$failed" tests
}

# Prints what CI logs need to explain a pg_regress failure.
show_regress_failure() {
	local out=$1
	if [[ -s $out/regression.diffs ]]; then
		echo "---- regression.diffs (first 200 lines) ----"
		head -n 200 "$out/regression.diffs"
	fi
	if [[ -s $out/log/postmaster.log ]]; then
		echo "---- postmaster.log (last 50 lines) ----"
		tail -n 50 "$out/log/postmaster.log"
	elif [[ -s $out/log/initdb.log ]]; then
		echo "---- initdb.log (last 20 lines) ----"
		tail -n 20 "$out/log/initdb.log"
	fi
	echo "----"
}

# Prints the TAP files to run (test/t/*.pl, sorted, or HANNOY_TAP_TESTS) as
# paths relative to the stage: t/NNN_topic.pl.
tap_tests() {
	local file names=()
	if [[ -n ${HANNOY_TAP_TESTS:-} ]]; then
		read -r -a names <<<"$HANNOY_TAP_TESTS"
		for file in "${names[@]}"; do
			file=${file##*/}
			printf 't/%s.pl\n' "${file%.pl}"
		done
		return 0
	fi
	for file in "$ROOT"/test/t/*.pl; do
		[[ -e $file ]] || continue
		names+=("t/${file##*/}")
	done
	((${#names[@]} == 0)) || sorted "${names[@]}"
}

# Mounts a small tmpfs, owned by postgres, that a TAP test can fill to see a
# full disk (test/t/190_os_errors.pl); only root can mount, so as another
# user nothing is mounted and that test skips its full-disk part.
mount_small_fs() {
	local dir=$1
	((EUID == 0)) || return 0
	mkdir -p "$dir"
	if mount -t tmpfs -o "size=${HANNOY_SMALL_FS_MB:-16}m,mode=0700" tmpfs "$dir" 2>/dev/null; then
		chown postgres: "$dir"
		SMALL_FS=$dir
	else
		say "tap: could not mount a tmpfs at $dir: the full-disk test will be skipped"
	fi
}

# Unmounts the small tmpfs, if mounted.
unmount_small_fs() {
	if [[ -n $SMALL_FS ]]; then
		umount "$SMALL_FS" 2>/dev/null || umount -l "$SMALL_FS" || true
		SMALL_FS=
	fi
}

# Layer c: runs each TAP file with prove as postgres, with cwd and TESTDIR at
# the stage (so tmp_check/ and its logs end up there); counts test files.
run_tap() {
	local stage test name passed=0 failed=0 tests
	mapfile -t tests < <(tap_tests)
	if ((${#tests[@]} == 0)); then
		say "tap: no test/t/*.pl, skipped"
		return 0
	fi
	stage=$(make_stage tap)
	cp -r "$ROOT/test/t" "$stage/t"
	# the data generators some tests run (bench/make_synthetic.py)
	mkdir -p "$stage/bench"
	cp "$ROOT"/bench/make_*.py "$stage/bench/"
	mkdir -p "$stage/tmp"
	own_stage "$stage"
	mount_small_fs "$TOP/smallfs"
	for test in "${tests[@]}"; do
		name=${test#t/}
		name=${name%.pl}
		if [[ ! -f $stage/$test ]]; then
			say "tap: $test does not exist"
			failed=$((failed + 1))
			continue
		fi
		say "tap: prove $test"
		# TESTDIR: PostgreSQL::Test::Utils puts tmp_check/ (logs, data
		# directories, port locks) there. TMPDIR: socket directories too.
		if (cd "$stage" && as_pg env \
			PATH="$PG_BIN:$PATH" \
			PERL5LIB="$PG_PERL${PERL5LIB:+:$PERL5LIB}" \
			PG_REGRESS="$PG_REGRESS" \
			TESTDIR="$stage" \
			TMPDIR="$stage/tmp" \
			HANNOY_TEST_SMALL_FS="$SMALL_FS" \
			HANNOY_BENCH_DIR="$stage/bench" \
			prove -v -I "$PG_PERL" -I "$stage/t" "$test"); then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			show_tap_failure "$stage/tmp_check/log" "$name"
		fi
	done
	unmount_small_fs
	record tap "$passed" "$failed" "test files"
}

# Prints the tail of a failed TAP file's logs: its regress_log_* (the test's
# own output) and its nodes' server logs.
show_tap_failure() {
	local logdir=$1 name=$2 file
	for file in "$logdir/regress_log_$name" "$logdir/$name"_*.log; do
		[[ -s $file ]] || continue
		echo "---- ${file##*/} (last 100 lines) ----"
		tail -n 100 "$file"
	done
	echo "----"
}

# Builds and installs the extension; a failure counts as one failed test.
# Checks that every C and C++ source is formatted as .clang-format says, and
# that the tree keeps its layers (scripts/check_layers.sh): two checks.
run_style() {
	local passed=0 failed=0
	say "style: make format-check"
	if make -s -C "$ROOT" format-check; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	say "style: make check-layers"
	if make -s -C "$ROOT" check-layers; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	record style "$passed" "$failed" checks
}

run_setup() {
	if [[ ${HANNOY_SKIP_SETUP:-0} == 1 ]]; then
		say "setup: skipped (HANNOY_SKIP_SETUP=1)"
		return 0
	fi
	if WERROR=$WERROR bash "$ROOT/scripts/setup.sh"; then
		return 0
	fi
	say "setup: FAILED"
	return 1
}

main() {
	local layers layer setup_ok=1
	read -r -a layers <<<"${HANNOY_TEST_LAYERS:-style unit regress tap}"
	for layer in "${layers[@]}"; do
		case $layer in
		style | unit | regress | tap) ;;
		*)
			echo "test.sh: unknown layer '$layer' (expected style, unit, regress, tap)" >&2
			exit 2
			;;
		esac
	done
	if [[ ${CI:-} == true ]]; then
		WERROR=1
	else
		WERROR=${WERROR:-0}
	fi

	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	TOP=$(mktemp -d /tmp/hannoy-test.XXXXXX)
	chmod 755 "$TOP"

	run_setup || {
		setup_ok=0
		TOTAL_FAILED=$((TOTAL_FAILED + 1))
	}
	for layer in "${layers[@]}"; do
		if ((setup_ok == 0)) && [[ $layer != unit && $layer != style ]]; then
			say "$layer: skipped, the extension did not build"
			continue
		fi
		"run_$layer"
	done

	cleanup
	printf '%d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
	((TOTAL_FAILED == 0 && TOTAL_PASSED > 0))
}

main "$@"
