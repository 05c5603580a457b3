#!/usr/bin/env bash
# Shows hannoy end to end on Fashion-MNIST (60,000 images of 784 pixels):
# installs and builds everything (scripts/setup.sh), prepares the data and
# its exact ground truth, starts a throwaway PostgreSQL 15 cluster, loads the
# vectors, times CREATE INDEX ... USING hannoy, runs a few nearest-neighbour
# queries with EXPLAIN, and prints recall@10 and latency for several
# hannoy.ef_search values next to an exact-scan baseline.
#
#   bash scripts/demo.sh          as root, from any directory
#
# The cluster lives in a postgres-owned temporary directory, listens only on
# a unix socket there, and is stopped and removed on exit, failure or Ctrl-C.
# Prepared data is cached under build/fmnist, so a second run is faster.
#
# Environment:
#   HANNOY_DEMO_ROWS=N     load only the first N training images (default 60000)
#   HANNOY_DEMO_KEEP=1     leave the cluster running and print how to connect
#   HANNOY_SKIP_SETUP=1    do not run scripts/setup.sh (already built)
set -euo pipefail

readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly FMNIST_DIR=/usr/share/datasets/fashion-mnist
readonly QUERIES=1000
readonly EXACT_QUERIES=50
readonly K=10
readonly EF_LIST=10,20,40,80,200
readonly M=16
readonly EF_CONSTRUCTION=200

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly BUILD_DIR=$ROOT/build
readonly TOOL=$BUILD_DIR/hannoy_data
ROWS=${HANNOY_DEMO_ROWS:-60000}
KEEP=${HANNOY_DEMO_KEEP:-0}
CLUSTER_DIR= # the postgres-owned temporary directory, once created
DATA_DIR=    # where the prepared data of this ROWS value is cached
PGDATA=
PORT=
CONNINFO=

# Prints a progress line, prefixed so that it stands out.
say() {
	printf '\n==> %s\n' "$*"
}

# Prints an error and exits non-zero.
die() {
	printf 'demo.sh: error: %s\n' "$*" >&2
	exit 1
}

# Prints the seconds elapsed since the epoch time $1 (from 'date +%s.%N').
seconds_since() {
	awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - start }'
}

# Runs a command as the postgres OS user (PostgreSQL refuses to run as root),
# from the cluster directory so that it never needs to read the checkout.
as_postgres() {
	(cd "$CLUSTER_DIR" && runuser -u postgres -- "$@")
}

# Runs psql against the demo cluster as the client (root), stopping on errors.
demo_psql() {
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER_DIR" -p "$PORT" -U postgres \
		-d postgres "$@"
}

# Prints the value of one SQL query, unaligned and without headers.
demo_value() {
	demo_psql -tA -c "$1"
}

# Stops the server and removes the cluster, or keeps it when asked; runs on
# every exit so that a failure or Ctrl-C leaves nothing behind.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $CLUSTER_DIR && -d $CLUSTER_DIR ]]; then
		if ((rc != 0)) && [[ -f $CLUSTER_DIR/postgres.log ]]; then
			printf '\ndemo.sh: failed (exit %d); last lines of the server log:\n' "$rc" >&2
			tail -n 20 "$CLUSTER_DIR/postgres.log" >&2 || true
		fi
		if [[ $KEEP == 1 && -f $PGDATA/postmaster.pid ]]; then
			print_keep_instructions
		else
			stop_cluster
			rm -rf -- "$CLUSTER_DIR"
		fi
	fi
	exit "$rc"
}

# Stops the demo server: fast shutdown, then immediate if that hangs.
stop_cluster() {
	[[ -f $PGDATA/postmaster.pid ]] || return 0
	as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
		true
}

# Tells how to reach and later remove a cluster kept with HANNOY_DEMO_KEEP=1.
print_keep_instructions() {
	cat <<EOF

The demo cluster is still running (HANNOY_DEMO_KEEP=1):
  connect:  $PG_BIN/psql -h $CLUSTER_DIR -p $PORT -U postgres postgres
  conninfo: $CONNINFO
  log:      $CLUSTER_DIR/postgres.log
  remove:   runuser -u postgres -- $PG_BIN/pg_ctl -D $PGDATA stop && rm -rf $CLUSTER_DIR
EOF
}

# Checks the environment knobs and that we run as root.
check_settings() {
	if ! [[ $ROWS =~ ^[1-9][0-9]*$ ]] || ((ROWS < K || ROWS > 60000)); then
		die "HANNOY_DEMO_ROWS must be an integer between $K and 60000, got '$ROWS'"
	fi
	[[ $KEEP == 0 || $KEEP == 1 ]] || die "HANNOY_DEMO_KEEP must be 0 or 1, got '$KEEP'"
	((EUID == 0)) || die "run as root (the cluster runs as the postgres user): sudo bash $0"
}

# Installs the packages and builds and installs the extension.
run_setup() {
	if [[ ${HANNOY_SKIP_SETUP:-0} == 1 ]]; then
		say "setup: skipped (HANNOY_SKIP_SETUP=1)"
	else
		say "setup: bash scripts/setup.sh"
		bash "$ROOT/scripts/setup.sh"
	fi
	[[ -f $("$PG_BIN/pg_config" --pkglibdir)/hannoy.so ]] ||
		die "hannoy.so is not installed in $("$PG_BIN/pg_config" --pkglibdir); did setup.sh fail?"
	[[ -d $FMNIST_DIR ]] || die "$FMNIST_DIR is missing: apt-get install dataset-fashion-mnist"
	command -v runuser >/dev/null || die "runuser (util-linux) is missing"
	id postgres >/dev/null 2>&1 || die "there is no postgres OS user (is postgresql-15 installed?)"
}

# Builds tools/hannoy_data into build/ unless it is already up to date.
build_tool() {
	local src=$ROOT/tools/hannoy_data.cpp
	mkdir -p "$BUILD_DIR"
	if [[ -x $TOOL && $TOOL -nt $src ]]; then
		say "tool: $TOOL is up to date"
		return 0
	fi
	say "tool: building $TOOL"
	g++ -std=c++17 -O3 -pthread -Wall -Wextra -o "$TOOL" "$src" \
		-I"$("$PG_BIN/pg_config" --includedir)" -lpq -lz
}

# Prepares base rows, queries and ground truth, or reuses an earlier run's.
prepare_data() {
	DATA_DIR=$BUILD_DIR/fmnist/rows$ROWS-q$QUERIES
	local f
	for f in base.copy queries.txt groundtruth.tsv; do
		if [[ ! -s $DATA_DIR/$f ]]; then
			say "data: preparing $ROWS rows and $QUERIES queries in $DATA_DIR"
			"$TOOL" fmnist-prep --out "$DATA_DIR" --train-limit "$ROWS" --queries "$QUERIES"
			return 0
		fi
	done
	say "data: using the cached $DATA_DIR"
}

# Prints a TCP port that nothing listens on (the server itself only listens
# on its unix socket, but a free number avoids confusing anyone).
pick_port() {
	local port
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	die "could not find a free port"
}

# Creates and starts the throwaway cluster as the postgres user.
start_cluster() {
	CLUSTER_DIR=$(mktemp -d /tmp/hannoy-demo.XXXXXX)
	chown postgres:postgres "$CLUSTER_DIR"
	chmod 700 "$CLUSTER_DIR"
	PGDATA=$CLUSTER_DIR/data
	PORT=$(pick_port)
	CONNINFO="host=$CLUSTER_DIR port=$PORT user=postgres dbname=postgres"
	say "cluster: initdb in $PGDATA, port $PORT"
	as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --locale=C -E UTF8 \
		>"$CLUSTER_DIR/initdb.log" 2>&1 || {
		cat "$CLUSTER_DIR/initdb.log" >&2
		die "initdb failed"
	}
	cat >>"$PGDATA/postgresql.conf" <<EOF

# hannoy demo
shared_preload_libraries = 'hannoy'
listen_addresses = ''
port = $PORT
unix_socket_directories = '$CLUSTER_DIR'
shared_buffers = '256MB'
maintenance_work_mem = '512MB'
max_wal_size = '4GB'
log_min_messages = warning
log_min_error_statement = error
EOF
	# setsid keeps the server out of the terminal's process group, so Ctrl-C
	# reaches only this script, whose trap then stops the server cleanly.
	as_postgres setsid -w "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$CLUSTER_DIR/postgres.log" -w -t 60 \
		start >/dev/null || die "the server did not start"
	demo_psql -c "CREATE EXTENSION hannoy"
	local simd=unknown
	if [[ $(demo_value "SELECT to_regprocedure('hannoy_simd()') IS NOT NULL") == t ]]; then
		simd=$(demo_value "SELECT hannoy_simd()")
	fi
	printf 'server %s, hannoy %s, distance kernels: %s\n' "$(demo_value "SHOW server_version")" \
		"$(demo_value "SELECT extversion FROM pg_extension WHERE extname = 'hannoy'")" "$simd"
}

# Creates the tables and loads the vectors and queries with client-side \copy.
load_data() {
	local start
	say "load: $ROWS rows into fmnist(id int primary key, label int, v real[])"
	start=$(date +%s.%N)
	demo_psql <<'EOF'
CREATE TABLE fmnist (id int PRIMARY KEY, label int, v real[]);
-- Keep the 3 kB vectors inline in the heap: no TOAST, no compression.
ALTER TABLE fmnist ALTER v SET STORAGE PLAIN;
CREATE TABLE fmnist_queries (qid int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v real[]);
CREATE TABLE fmnist_classes (label int PRIMARY KEY, name text);
INSERT INTO fmnist_classes VALUES (0, 'T-shirt/top'), (1, 'Trouser'), (2, 'Pullover'),
	(3, 'Dress'), (4, 'Coat'), (5, 'Sandal'), (6, 'Shirt'), (7, 'Sneaker'), (8, 'Bag'),
	(9, 'Ankle boot');
EOF
	demo_psql -c '\copy fmnist FROM pstdin' <"$DATA_DIR/base.copy"
	demo_psql -c '\copy fmnist_queries (v) FROM pstdin' <"$DATA_DIR/queries.txt"
	demo_psql -c 'VACUUM ANALYZE fmnist' -c 'VACUUM ANALYZE fmnist_queries'
	printf 'loaded %s rows (%s heap) in %s s\n' "$(demo_value "SELECT count(*) FROM fmnist")" \
		"$(demo_value "SELECT pg_size_pretty(pg_table_size('fmnist'))")" "$(seconds_since "$start")"
}

# Builds the hannoy index on all cores and prints how long it took.
build_index() {
	local start threads
	threads=$(nproc)
	say "index: CREATE INDEX fmnist_v_idx ON fmnist USING hannoy (v real_l2_ops)" \
		"WITH (m = $M, ef_construction = $EF_CONSTRUCTION)"
	start=$(date +%s.%N)
	# hannoy.build_threads is set to the core count, within the GUC's range.
	demo_psql -c "SELECT set_config(name, least($threads, max_val::int)::text, false)
	                FROM pg_settings WHERE name = 'hannoy.build_threads'" \
		-c "CREATE INDEX fmnist_v_idx ON fmnist USING hannoy (v real_l2_ops)
		      WITH (m = $M, ef_construction = $EF_CONSTRUCTION)" >/dev/null
	printf 'CREATE INDEX took %s s (%s rows, %s cores)\n' "$(seconds_since "$start")" "$ROWS" \
		"$threads"
}

# Prints the index size: hannoy_index_size() if the extension has it, else
# the size of the LMDB sidecar directory.
print_index_size() {
	local has_fn bytes
	has_fn=$(demo_value "SELECT to_regprocedure('hannoy_index_size(regclass)') IS NOT NULL")
	if [[ $has_fn == t ]]; then
		bytes=$(demo_value "SELECT hannoy_index_size('fmnist_v_idx')")
		printf 'index size: %s bytes (%s, hannoy_index_size)\n' "$bytes" \
			"$(demo_value "SELECT pg_size_pretty($bytes::bigint)")"
	elif [[ -d $PGDATA/hannoy ]]; then
		bytes=$(du -sb "$PGDATA/hannoy" | cut -f1)
		printf 'index size: %s bytes (%s, du -sb %s)\n' "$bytes" \
			"$(demo_value "SELECT pg_size_pretty($bytes::bigint)")" "$PGDATA/hannoy"
	else
		printf 'index size: unknown (no hannoy_index_size() and no %s)\n' "$PGDATA/hannoy"
	fi
	printf 'index relation: %s, heap: %s\n' \
		"$(demo_value "SELECT pg_size_pretty(pg_relation_size('fmnist_v_idx'))")" \
		"$(demo_value "SELECT pg_size_pretty(pg_table_size('fmnist'))")"
}

# Shows a few nearest-neighbour queries and their plans in psql.
show_queries() {
	local plan
	say "queries: the 5 nearest training images of test images 1-3"
	demo_psql -e <<'EOF'
SELECT q.qid AS query, n.id, c.name AS class, round(n.distance::numeric, 1) AS distance
  FROM fmnist_queries q
 CROSS JOIN LATERAL (SELECT f.id, f.label, f.v <-> q.v AS distance
                       FROM fmnist f ORDER BY f.v <-> q.v LIMIT 5) n
  JOIN fmnist_classes c ON c.label = n.label
 WHERE q.qid <= 3
 ORDER BY q.qid, n.distance;
EOF
	say "queries: plans with the index and with an exact scan"
	demo_psql -e <<'EOF'
EXPLAIN (ANALYZE, COSTS OFF)
SELECT id FROM fmnist ORDER BY v <-> (SELECT v FROM fmnist_queries WHERE qid = 1) LIMIT 10;
SET enable_indexscan = off;
EXPLAIN (ANALYZE, COSTS OFF)
SELECT id FROM fmnist ORDER BY v <-> (SELECT v FROM fmnist_queries WHERE qid = 1) LIMIT 10;
EOF
	plan=$(demo_value "EXPLAIN (COSTS OFF) SELECT id FROM fmnist
	                     ORDER BY v <-> (SELECT v FROM fmnist_queries WHERE qid = 1) LIMIT 10")
	if [[ $plan != *fmnist_v_idx* ]]; then
		printf 'demo.sh: warning: the planner does not use fmnist_v_idx; the bench below\n' >&2
		printf 'demo.sh: warning: then measures sequential scans\n' >&2
	fi
}

# Runs the recall/latency bench for each ef and the exact baseline, then
# prints the results as one table.
run_bench() {
	local csv=$BUILD_DIR/demo-bench.csv
	rm -f -- "$csv"
	say "bench: $QUERIES queries, k=$K, hannoy.ef_search in $EF_LIST"
	"$TOOL" bench --conninfo "$CONNINFO" --table fmnist --column v --op '<->' \
		--queries "$DATA_DIR/queries.txt" --groundtruth "$DATA_DIR/groundtruth.tsv" --k "$K" \
		--ef "$EF_LIST" --warmup --label hannoy --csv "$csv"
	say "bench: exact scan baseline (enable_indexscan = off), first $EXACT_QUERIES queries"
	"$TOOL" bench --conninfo "$CONNINFO" --table fmnist --column v --op '<->' \
		--queries "$DATA_DIR/queries.txt" --groundtruth "$DATA_DIR/groundtruth.tsv" --k "$K" \
		--exact --exact-queries "$EXACT_QUERIES" --warmup --label exact --csv "$csv"
	say "results: Fashion-MNIST, $ROWS rows, m = $M, ef_construction = $EF_CONSTRUCTION," \
		"$(nproc) cores (also in $csv)"
	awk -F, -v k="$K" '
		NR == 1 {
			printf "%-8s %6s %10s %10s %9s %9s\n", "scan", "ef", "recall@" k, "qps", "p50 ms", "p99 ms"
			next
		}
		{ printf "%-8s %6s %10s %10s %9.2f %9.2f\n", $1, $2, $3, $4, $5, $6 }' "$csv"
}

main() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	check_settings
	cd "$ROOT"
	run_setup
	build_tool
	prepare_data
	start_cluster
	load_data
	build_index
	print_index_size
	show_queries
	run_bench
	say "demo: done"
}

main "$@"
