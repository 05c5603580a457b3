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

readonly FMNIST_DIR=/usr/share/datasets/fashion-mnist
readonly QUERIES=1000
readonly EXACT_QUERIES=50
readonly K=10
readonly EF_LIST=10,20,40,80,200
readonly M=16
readonly EF_CONSTRUCTION=200

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

readonly BUILD_DIR=$ROOT/build
readonly TOOL=$BUILD_DIR/hannoy_data
ROWS=${HANNOY_DEMO_ROWS:-60000}
KEEP=${HANNOY_DEMO_KEEP:-0}
DATA_DIR= # where the prepared data of this ROWS value is cached

# Checks the environment knobs and that we run as root.
check_settings() {
	if ! [[ $ROWS =~ ^[1-9][0-9]*$ ]] || ((ROWS < K || ROWS > 60000)); then
		die "HANNOY_DEMO_ROWS must be an integer between $K and 60000, got '$ROWS'"
	fi
	[[ $KEEP == 0 || $KEEP == 1 ]] || die "HANNOY_DEMO_KEEP must be 0 or 1, got '$KEEP'"
	require_root
}

# Installs the packages, builds and installs the extension, and checks that
# the Fashion-MNIST files are there.
setup() {
	run_setup
	[[ -d $FMNIST_DIR ]] || die "$FMNIST_DIR is missing: apt-get install dataset-fashion-mnist"
}

# Builds tools/hannoy_data into build/ unless it is already up to date.
build_tool() {
	build_program "$TOOL" "$ROOT/tools/hannoy_data.cpp" \
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

# Creates and starts the throwaway cluster and prints the server's versions.
start_cluster() {
	cluster_start demo "shared_buffers = '256MB'" "maintenance_work_mem = '512MB'" \
		"max_wal_size = '4GB'" "log_min_messages = warning" "log_min_error_statement = error"
	local simd=unknown
	if [[ $(cluster_value "SELECT to_regprocedure('hannoy_simd()') IS NOT NULL") == t ]]; then
		simd=$(cluster_value "SELECT hannoy_simd()")
	fi
	printf 'server %s, hannoy %s, distance kernels: %s\n' "$(cluster_value "SHOW server_version")" \
		"$(cluster_value "SELECT extversion FROM pg_extension WHERE extname = 'hannoy'")" "$simd"
}

# Creates the tables and loads the vectors and queries with client-side \copy.
load_data() {
	local start
	say "load: $ROWS rows into fmnist(id int primary key, label int, v real[])"
	start=$(date +%s.%N)
	cluster_psql <<'EOF'
CREATE TABLE fmnist (id int PRIMARY KEY, label int, v real[]);
-- Keep the 3 kB vectors inline in the heap: no TOAST, no compression.
ALTER TABLE fmnist ALTER v SET STORAGE PLAIN;
CREATE TABLE fmnist_queries (qid int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v real[]);
CREATE TABLE fmnist_classes (label int PRIMARY KEY, name text);
INSERT INTO fmnist_classes VALUES (0, 'T-shirt/top'), (1, 'Trouser'), (2, 'Pullover'),
	(3, 'Dress'), (4, 'Coat'), (5, 'Sandal'), (6, 'Shirt'), (7, 'Sneaker'), (8, 'Bag'),
	(9, 'Ankle boot');
EOF
	cluster_psql -c '\copy fmnist FROM pstdin' <"$DATA_DIR/base.copy"
	cluster_psql -c '\copy fmnist_queries (v) FROM pstdin' <"$DATA_DIR/queries.txt"
	cluster_psql -c 'VACUUM ANALYZE fmnist' -c 'VACUUM ANALYZE fmnist_queries'
	printf 'loaded %s rows (%s heap) in %s s\n' "$(cluster_value "SELECT count(*) FROM fmnist")" \
		"$(cluster_value "SELECT pg_size_pretty(pg_table_size('fmnist'))")" "$(seconds_since "$start")"
}

# Builds the hannoy index on all cores and prints how long it took.
build_index() {
	local start threads
	threads=$(nproc)
	say "index: CREATE INDEX fmnist_v_idx ON fmnist USING hannoy (v real_l2_ops)" \
		"WITH (m = $M, ef_construction = $EF_CONSTRUCTION)"
	start=$(date +%s.%N)
	# hannoy.build_threads is set to the core count, within the GUC's range.
	cluster_psql -c "SELECT set_config(name, least($threads, max_val::int)::text, false)
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
	has_fn=$(cluster_value "SELECT to_regprocedure('hannoy_index_size(regclass)') IS NOT NULL")
	if [[ $has_fn == t ]]; then
		bytes=$(cluster_value "SELECT hannoy_index_size('fmnist_v_idx')")
		printf 'index size: %s bytes (%s, hannoy_index_size)\n' "$bytes" \
			"$(cluster_value "SELECT pg_size_pretty($bytes::bigint)")"
	elif [[ -d $PGDATA/hannoy ]]; then
		bytes=$(du -sb "$PGDATA/hannoy" | cut -f1)
		printf 'index size: %s bytes (%s, du -sb %s)\n' "$bytes" \
			"$(cluster_value "SELECT pg_size_pretty($bytes::bigint)")" "$PGDATA/hannoy"
	else
		printf 'index size: unknown (no hannoy_index_size() and no %s)\n' "$PGDATA/hannoy"
	fi
	printf 'index relation: %s, heap: %s\n' \
		"$(cluster_value "SELECT pg_size_pretty(pg_relation_size('fmnist_v_idx'))")" \
		"$(cluster_value "SELECT pg_size_pretty(pg_table_size('fmnist'))")"
}

# Shows a few nearest-neighbour queries and their plans in psql.
show_queries() {
	local plan
	say "queries: the 5 nearest training images of test images 1-3"
	cluster_psql -e <<'EOF'
SELECT q.qid AS query, n.id, c.name AS class, round(n.distance::numeric, 1) AS distance
  FROM fmnist_queries q
 CROSS JOIN LATERAL (SELECT f.id, f.label, f.v <-> q.v AS distance
                       FROM fmnist f ORDER BY f.v <-> q.v LIMIT 5) n
  JOIN fmnist_classes c ON c.label = n.label
 WHERE q.qid <= 3
 ORDER BY q.qid, n.distance;
EOF
	say "queries: plans with the index and with an exact scan"
	cluster_psql -e <<'EOF'
EXPLAIN (ANALYZE, COSTS OFF)
SELECT id FROM fmnist ORDER BY v <-> (SELECT v FROM fmnist_queries WHERE qid = 1) LIMIT 10;
SET enable_indexscan = off;
EXPLAIN (ANALYZE, COSTS OFF)
SELECT id FROM fmnist ORDER BY v <-> (SELECT v FROM fmnist_queries WHERE qid = 1) LIMIT 10;
EOF
	plan=$(cluster_value "EXPLAIN (COSTS OFF) SELECT id FROM fmnist
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
	cluster_traps HANNOY_DEMO_KEEP
	check_settings
	cd "$ROOT"
	setup
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
