#!/usr/bin/env bash
# Benchmarks hannoy side by side with pgvector's hnsw (when the server has
# it), hnswlib in-process, an exact scan and the SQL floor, on
# random-xs-20-euclidean, Fashion-MNIST (euclidean and cosine), synthetic
# sets that stress the graph (clustered with a common component, angular and
# cosine; uniform 64-d) and a synthetic clustered 128-d set of 1,000,000 rows
# (bench/README.md explains what is measured).  The columns keep PostgreSQL's
# default storage, as users have them.
#
#   bash bench/run.sh            as root: the full run (the default data sets)
#   bash bench/run.sh --smoke    random-xs-20 only, 2 ef values, about a minute
#
# It runs scripts/setup.sh (skip with HANNOY_SKIP_SETUP=1), builds the
# programs of bench/ into build/bench/, prepares the data sets and their
# exact ground truth once (cached in bench/cache/), starts a throwaway
# PostgreSQL 15 cluster as the postgres user, and writes into
# bench/results/<timestamp>/:
#   summary.md            the tables and the hannoy/pgvector ratios
#   queries.csv, builds.csv, inserts.csv, timings.csv   the raw numbers
#   recall-qps-<data set>.png                           the plots (gnuplot)
#   machine.md            CPU, memory, kernel, versions, SIMD kernel, settings
#   log.txt               everything the run printed, query plans included
# A full run also copies summary.md and the plots to bench/results/latest/.
#
# Environment (defaults in brackets; --smoke changes the marked ones):
#   HANNOY_BENCH_DATASETS     any of random-xs-20, fashion-mnist, fashion-mnist-cosine,
#                             clustered-angular, clustered-cosine, uniform-64, clustered-128
#                             [all but clustered-128]                   [smoke: random-xs-20]
#   HANNOY_BENCH_BIG_ROWS     rows of clustered-128 [1000000]
#   HANNOY_BENCH_UNIFORM_ROWS rows of uniform-64 [100000]
#   HANNOY_BENCH_M            m of every HNSW index [16]
#   HANNOY_BENCH_EFC          ef_construction values [64,200]            [smoke: 64]
#   HANNOY_BENCH_EF           ef_search values [10,20,40,80,160,320,640,1000]  [smoke: 20,80]
#   HANNOY_BENCH_REPEAT       measured passes per setting; QPS is their median [5]  [smoke: 1]
#   HANNOY_BENCH_FILTER_EF    ef_search values of the filtered queries [40,200]  [smoke: 40]
#   HANNOY_BENCH_INSERT_ROWS  rows inserted per insert run [2000]        [smoke: 200]
#   HANNOY_BENCH_INSERT_EFC   the ef_construction whose index takes the inserts [first of EFC]
#   HANNOY_BENCH_PGVECTOR     auto: compare with pgvector when CREATE EXTENSION vector works;
#                             off: never [auto]
#   HANNOY_BENCH_HNSWLIB      1: run the hnswlib baseline, 0: do not [1]
#   HANNOY_BENCH_CPU          the CPU the query client, its backends and hnswlib are pinned
#                             to [the last CPU]
#   HANNOY_BENCH_SHARED_BUFFERS  shared_buffers of the cluster [2GB]
#   HANNOY_BENCH_QUANTIZED=1  also build and query the quantized variants on copies of each
#                             table: hannoy with quantizer = 'binary', 'scalar8' and 'none'
#                             (systems hannoy-binary, hannoy-scalar8, hannoy-none), the first
#                             two also with rerank = 'heap' (hannoy-binary-heap,
#                             hannoy-scalar8-heap) and, with
#                             pgvector, its binary_quantize expression index re-ranked in SQL
#                             the way its README shows (pgvector-bq; the subquery fetches
#                             ef_search candidates); or a list of some of them, e.g.
#                             binary-heap,scalar8-heap,bq (hannoy-<name>, bq: pgvector-bq) [0]
#   HANNOY_BENCH_PLAIN=1      also build and query copies of the tables whose vector column
#                             has STORAGE PLAIN (systems hannoy-plain, pgvector-plain), an
#                             extra line beside the default storage [0]
#   HANNOY_PG_BIN             the PostgreSQL 15 bin directory [/usr/lib/postgresql/15/bin]
#   HANNOY_BENCH_KEEP=1       leave the cluster running at the end
#   HANNOY_SKIP_SETUP=1       do not run scripts/setup.sh (already built and installed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

readonly K=10
readonly GT_K=100
readonly BENCH=$ROOT/bench
readonly CACHE=$BENCH/cache
readonly TOOLS=$ROOT/build/bench
NPROC=$(nproc)
readonly NPROC

SMOKE=0
POSTMASTER_PID=
OUT= # the results directory of this run
PGVECTOR=0
RUN_START=$(date +%s.%N)

# Runs a command and appends "data set,step,seconds" to timings.csv.
timed() {
	local dataset=$1 step=$2 start
	shift 2
	start=$(date +%s.%N)
	"$@"
	printf '%s,%s,%s\n' "$dataset" "$step" "$(seconds_since "$start")" >>"$OUT/timings.csv"
}

# Reads the options and the environment into the run's settings.
configure() {
	while (($#)); do
		case $1 in
		--smoke) SMOKE=1 ;;
		-h | --help)
			sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
			exit 0
			;;
		*) die "unknown argument '$1' (try --help)" ;;
		esac
		shift
	done
	if ((SMOKE)); then
		DATASETS=${HANNOY_BENCH_DATASETS:-random-xs-20}
		EFC_LIST=${HANNOY_BENCH_EFC:-64}
		EF_LIST=${HANNOY_BENCH_EF:-20,80}
		REPEAT=${HANNOY_BENCH_REPEAT:-1}
		FILTER_EF=${HANNOY_BENCH_FILTER_EF:-40}
		INSERT_ROWS=${HANNOY_BENCH_INSERT_ROWS:-200}
	else
		DATASETS=${HANNOY_BENCH_DATASETS:-random-xs-20,fashion-mnist,fashion-mnist-cosine,clustered-angular,clustered-cosine,uniform-64}
		EFC_LIST=${HANNOY_BENCH_EFC:-64,200}
		EF_LIST=${HANNOY_BENCH_EF:-10,20,40,80,160,320,640,1000}
		REPEAT=${HANNOY_BENCH_REPEAT:-5}
		FILTER_EF=${HANNOY_BENCH_FILTER_EF:-40,200}
		INSERT_ROWS=${HANNOY_BENCH_INSERT_ROWS:-2000}
	fi
	M=${HANNOY_BENCH_M:-16}
	BIG_ROWS=${HANNOY_BENCH_BIG_ROWS:-1000000}
	UNIFORM_ROWS=${HANNOY_BENCH_UNIFORM_ROWS:-100000}
	PLAIN=${HANNOY_BENCH_PLAIN:-0}
	QUANTIZED=${HANNOY_BENCH_QUANTIZED:-0}
	INSERT_EFC=${HANNOY_BENCH_INSERT_EFC:-${EFC_LIST%%,*}}
	PGVECTOR_MODE=${HANNOY_BENCH_PGVECTOR:-auto}
	HNSWLIB=${HANNOY_BENCH_HNSWLIB:-1}
	CPU=${HANNOY_BENCH_CPU:-$((NPROC - 1))}
	SHARED_BUFFERS=${HANNOY_BENCH_SHARED_BUFFERS:-2GB}
	local name value
	for name in EFC_LIST EF_LIST FILTER_EF; do
		value=${!name}
		[[ $value =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "$name must be a list like 40,200, got '$value'"
	done
	for name in M BIG_ROWS UNIFORM_ROWS REPEAT INSERT_ROWS INSERT_EFC CPU; do
		value=${!name}
		[[ $value =~ ^[0-9]+$ ]] || die "$name must be a number, got '$value'"
	done
	((BIG_ROWS >= 1000)) || die "HANNOY_BENCH_BIG_ROWS must be at least 1000"
	((UNIFORM_ROWS >= 1000)) || die "HANNOY_BENCH_UNIFORM_ROWS must be at least 1000"
	[[ $PLAIN == 0 || $PLAIN == 1 ]] || die "HANNOY_BENCH_PLAIN must be 0 or 1, got '$PLAIN'"
	[[ $QUANTIZED == 1 ]] && QUANTIZED=binary,scalar8,binary-heap,scalar8-heap,none,bq
	[[ $QUANTIZED == 0 || $QUANTIZED =~ ^(binary|scalar8|binary-heap|scalar8-heap|none|bq)(,(binary|scalar8|binary-heap|scalar8-heap|none|bq))*$ ]] ||
		die "HANNOY_BENCH_QUANTIZED must be 0, 1 or a list like binary-heap,scalar8-heap,bq, got '$QUANTIZED'"
	((INSERT_ROWS >= 16)) || die "HANNOY_BENCH_INSERT_ROWS must be at least 16"
	((CPU < NPROC)) || die "HANNOY_BENCH_CPU must be below $NPROC"
	[[ $PGVECTOR_MODE == auto || $PGVECTOR_MODE == off ]] ||
		die "HANNOY_BENCH_PGVECTOR must be auto or off, got '$PGVECTOR_MODE'"
	local ds
	for ds in ${DATASETS//,/ }; do
		case $ds in
		random-xs-20 | fashion-mnist | fashion-mnist-cosine | clustered-angular | clustered-cosine | \
			uniform-64 | clustered-128) ;;
		*) die "unknown data set '$ds' (random-xs-20, fashion-mnist, fashion-mnist-cosine, clustered-angular, clustered-cosine, uniform-64, clustered-128)" ;;
		esac
	done
	require_root
}

# Installs and builds what the benchmark needs.
setup() {
	run_setup
	# Beyond scripts/setup.sh: scikit-learn generates random-xs-20, numpy
	# (which it pulls in) the other synthetic sets.
	local pkg missing=()
	for pkg in python3-sklearn gnuplot-nox libhnswlib-dev libpq-dev dataset-fashion-mnist \
		postgresql-contrib; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) == installed ]] ||
			missing+=("$pkg")
	done
	if ((${#missing[@]})); then
		say "setup: installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	fi
}

# Builds the benchmark programs into build/bench/, for this CPU.
build_tools() {
	local inc
	inc=$("$PG_BIN/pg_config" --includedir)
	# A relocated server copy (HANNOY_PG_BIN) may lack the client headers:
	# libpq's are the same for every PostgreSQL 15, so take the system's.
	[[ -f $inc/libpq-fe.h ]] || inc=$(pg_config --includedir)
	inc=-I$inc
	build_program "$TOOLS/hannoy_bench" "$BENCH/hannoy_bench.cpp" -march=native "$inc" -lpq
	build_program "$TOOLS/hnswlib_bench" "$BENCH/hnswlib_bench.cpp" -march=native
	build_program "$TOOLS/hannoy_data" "$ROOT/tools/hannoy_data.cpp" -march=native "$inc" -lpq -lz
}

# Prints the cache directory of data set $1.
dataset_dir() {
	case $1 in
	random-xs-20) echo "$CACHE/random-xs-20-euclidean" ;;
	fashion-mnist) echo "$CACHE/fashion-mnist-784-euclidean" ;;
	fashion-mnist-cosine) echo "$CACHE/fashion-mnist-784-cosine" ;;
	clustered-angular) echo "$CACHE/clustered-angular-32-euclidean-q1000" ;;
	clustered-cosine) echo "$CACHE/clustered-cosine-32-cosine-q1000" ;;
	uniform-64) echo "$CACHE/uniform-64-euclidean-$UNIFORM_ROWS-q1000" ;;
	clustered-128) echo "$CACHE/clustered-128-euclidean-$BIG_ROWS" ;;
	esac
}

# Prints the metric data set $1 is searched with: l2 or cosine.
dataset_metric() {
	case $1 in
	fashion-mnist-cosine | clustered-cosine) echo cosine ;;
	*) echo l2 ;;
	esac
}

# Prints the distance operator of metric $1 (the same for hannoy and pgvector).
metric_operator() {
	case $1 in
	l2) echo '<->' ;;
	cosine) echo '<=>' ;;
	esac
}

# Writes base.copy, queries.txt and the ground truth files of data set $1
# into its cache directory, unless an earlier run did ("done" is written last).
prepare_dataset() {
	local ds=$1 dir metric
	dir=$(dataset_dir "$ds")
	metric=$(dataset_metric "$ds")
	if [[ -f $dir/done ]]; then
		say "data: $ds cached in $dir"
		return 0
	fi
	say "data: preparing $ds in $dir"
	rm -rf -- "$dir"
	mkdir -p "$dir"
	case $ds in
	random-xs-20)
		/usr/bin/python3 "$BENCH/make_blobs.py" "$dir"
		;;
	fashion-mnist)
		"$TOOLS/hannoy_data" fmnist-prep --out "$dir" --queries 1000 --gt-k "$GT_K"
		;;
	fashion-mnist-cosine)
		# The same rows and queries as fashion-mnist, with cosine ground truth.
		local l2_dir
		l2_dir=$(dataset_dir fashion-mnist)
		prepare_dataset fashion-mnist
		cp -- "$l2_dir/base.copy" "$l2_dir/queries.txt" "$dir/"
		;;
	clustered-angular)
		# 1,000 queries, as uniform-64 below: at ef_search 10 (recall@10 near 0.8) 300 queries
		# measure the recall difference to about +-0.006, more than the 0.005 issue 13 allows
		/usr/bin/python3 "$BENCH/make_synthetic.py" angular "$dir" --rows 30000 --queries 1000 \
			--dims 32 --seed 42
		;;
	clustered-cosine)
		/usr/bin/python3 "$BENCH/make_synthetic.py" cosine "$dir" --rows 30000 --queries 1000 \
			--dims 32 --seed 42
		;;
	uniform-64)
		# 1,000 queries: its recall@10 is near 0.2 at ef_search 10, where 300 queries measure
		# it to about +-0.007 (one standard deviation), more than the 0.005 issue 13 allows
		/usr/bin/python3 "$BENCH/make_synthetic.py" uniform "$dir" --rows "$UNIFORM_ROWS" \
			--queries 1000 --dims 64 --seed 42
		;;
	clustered-128)
		"$TOOLS/hannoy_bench" synth --out "$dir" --rows "$BIG_ROWS" --queries 1000 --dims 128 \
			--clusters 1000 --latent 16 --seed 42
		;;
	esac
	if [[ ! -f $dir/groundtruth.tsv ]]; then
		"$TOOLS/hannoy_bench" groundtruth --base "$dir/base.copy" --queries "$dir/queries.txt" \
			--out "$dir/groundtruth.tsv" --k "$GT_K" --metric "$metric"
	fi
	# The filtered queries keep rows with sel = id % 100 below 10 (10%) or 1 (1%).
	local below
	for below in 10 1; do
		"$TOOLS/hannoy_bench" groundtruth --base "$dir/base.copy" --queries "$dir/queries.txt" \
			--out "$dir/groundtruth-sel$below.tsv" --k "$GT_K" --id-mod 100 --id-below "$below" \
			--metric "$metric"
	done
	touch "$dir/done"
}

# Prints where the results are when the run ends (the exit hook).
print_results_dir() {
	if [[ -n $OUT && -d $OUT ]]; then
		printf '\nrun.sh: results in %s (%s s)\n' "$OUT" "$(seconds_since "$RUN_START")"
	fi
}

# Creates and starts the throwaway cluster and creates the extensions.
start_cluster() {
	# fsync and synchronous_commit stay on (the defaults) for both systems.
	cluster_start bench "max_connections = 40" "shared_buffers = '$SHARED_BUFFERS'" \
		"max_parallel_maintenance_workers = $((NPROC - 1))" "max_parallel_workers_per_gather = 0" \
		"jit = off" "autovacuum = off" "max_wal_size = '16GB'" "checkpoint_timeout = '1h'" \
		"log_min_messages = warning"
	POSTMASTER_PID=$(head -n 1 "$PGDATA/postmaster.pid")
	if [[ $PGVECTOR_MODE == off ]]; then
		say "pgvector: skipped (HANNOY_BENCH_PGVECTOR=off)"
	elif cluster_psql -c "CREATE EXTENSION vector" 2>"$CLUSTER_DIR/vector.err"; then
		PGVECTOR=1
		say "pgvector: $(cluster_value "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
	else
		say "pgvector: skipped (CREATE EXTENSION vector failed: $(head -n 1 "$CLUSTER_DIR/vector.err"))"
	fi
}

# Writes machine.md: hardware, software versions and the run's settings.
write_machine_info() {
	local f=$OUT/machine.md commit dirty changes=
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$ROOT" status --porcelain -- src include sql 2>/dev/null | wc -l)
	if ((dirty > 0)); then
		changes=" with $dirty uncommitted changes under src/ include/ sql/"
	fi
	{
		printf '# Machine and software\n\n'
		printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
		printf -- '- CPU: %s, %s CPUs (nproc)\n' \
			"$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" "$NPROC"
		printf -- '- memory: %s\n' "$(free -h | awk '/^Mem:/ { print $2 " total, " $7 " available" }')"
		printf -- '- kernel: %s\n' "$(uname -srvm)"
		printf -- '- PostgreSQL: %s\n' "$(cluster_value 'SELECT version()')"
		printf -- '- hannoy: %s, git %s%s, distance kernels: %s\n' \
			"$(cluster_value "SELECT extversion FROM pg_extension WHERE extname = 'hannoy'")" "$commit" \
			"$changes" "$(cluster_value 'SELECT hannoy_simd()')"
		if ((PGVECTOR)); then
			printf -- '- pgvector: %s\n' \
				"$(cluster_value "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
		else
			printf -- '- pgvector: not available (skipped)\n'
		fi
		printf -- '- hnswlib: Debian libhnswlib-dev %s, built with g++ -O3 -march=native\n' \
			"$(dpkg-query -W -f='${Version}' libhnswlib-dev 2>/dev/null || echo unknown)"
		printf -- '- compiler: %s\n' "$(g++ --version | head -n 1)"
		printf -- '- perf counters: %s\n' "$(perf_counters)"
		printf '\n## Settings\n\n'
		printf -- '- mode: %s; data sets: %s\n' "$( ((SMOKE)) && echo smoke || echo full)" "$DATASETS"
		printf -- '- m = %s; ef_construction: %s; ef_search: %s; filtered ef_search: %s\n' \
			"$M" "$EFC_LIST" "$EF_LIST" "$FILTER_EF"
		printf -- '- k = %s; %s measured passes per setting after a warm-up pass, QPS = median\n' \
			"$K" "$REPEAT"
		printf -- '- query client and its backends pinned to CPU %s (taskset / sched_setaffinity); hnswlib too\n' "$CPU"
		printf -- '- builds: hannoy.build_threads = %s; pgvector max_parallel_maintenance_workers = %s and the table'"'"'s parallel_workers = %s (leader + workers = %s processes); maintenance_work_mem per build = rows x (4 x dims + 64 x m) x 1.25 + 64 MB, for both\n' \
			"$NPROC" "$((NPROC - 1))" "$((NPROC - 1))" "$NPROC"
		local plain_note=
		if ((PLAIN)); then plain_note="; also STORAGE PLAIN copies (hannoy-plain, pgvector-plain)"; fi
		printf -- '- column storage: each type'"'"'s default (%s; p = plain, e = external, x = extended)%s\n' \
			"$(cluster_value "SELECT string_agg(format_type(oid, NULL) || ': ' || typstorage::text, ', ')
				FROM pg_type WHERE typname IN ('_float4', 'vector')")" "$plain_note"
		printf -- '- inserts: %s rows per run, one row per transaction, pgbench with 1 and 8 clients, into the ef_construction = %s index\n' \
			"$INSERT_ROWS" "$INSERT_EFC"
		printf '\n## Server settings\n\n```\n'
		cluster_psql -tA -F ' = ' -c "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings
			WHERE name IN ('shared_buffers', 'maintenance_work_mem', 'work_mem', 'fsync',
			  'synchronous_commit', 'wal_level', 'max_parallel_maintenance_workers',
			  'max_parallel_workers_per_gather', 'jit', 'autovacuum', 'hannoy.ef_search',
			  'hannoy.build_threads') ORDER BY name"
		# shellcheck disable=SC2016 # markdown code fences, not command substitution
		printf '```\n\n## lscpu\n\n```\n'
		lscpu
		# shellcheck disable=SC2016 # markdown code fences, not command substitution
		printf '```\n\n## free -m\n\n```\n'
		free -m
		printf '```\n'
	} >"$f"
}

# Prints whether hardware performance counters work here (for perf stat).
perf_counters() {
	if ! command -v perf >/dev/null; then
		echo "perf not installed"
	elif perf stat -x, -e instructions true 2>&1 >/dev/null | grep -q '<not supported>'; then
		echo "not supported (perf stat -e instructions); use software events (perf record -e cpu-clock)"
	else
		echo "available"
	fi
}

# Prints the systems measured on every data set: hannoy, pgvector when the
# server has it, and with HANNOY_BENCH_PLAIN=1 the same on STORAGE PLAIN copies.
systems() {
	local list=(hannoy)
	if ((PGVECTOR)); then list+=(pgvector); fi
	if ((PLAIN)); then
		list+=(hannoy-plain)
		if ((PGVECTOR)); then list+=(pgvector-plain); fi
	fi
	if [[ $QUANTIZED != 0 ]]; then
		local name
		for name in ${QUANTIZED//,/ }; do
			if [[ $name != bq ]]; then
				list+=("hannoy-$name")
			elif ((PGVECTOR)); then
				list+=(pgvector-bq)
			fi
		done
	fi
	echo "${list[@]}"
}

# Prints the quantized variants of $(systems): each reads a copy of its base table.
quantized_systems() {
	local system
	for system in $(systems); do
		case $system in
		hannoy-binary* | hannoy-scalar8* | hannoy-none | pgvector-bq) echo "$system" ;;
		esac
	done
}

# Prints the table system $2 reads of the data set loaded into <$1>: <tab>
# (real[]), <tab>_vec (vector), <tab>_plain, <tab>_vec_plain.
system_table() {
	local tab=$1 system=$2
	case $system in
	hannoy) echo "$tab" ;;
	pgvector) echo "${tab}_vec" ;;
	hannoy-plain) echo "${tab}_plain" ;;
	pgvector-plain) echo "${tab}_vec_plain" ;;
	hannoy-binary) echo "${tab}_bin" ;;
	hannoy-scalar8) echo "${tab}_s8" ;;
	hannoy-binary-heap) echo "${tab}_binh" ;;
	hannoy-scalar8-heap) echo "${tab}_s8h" ;;
	hannoy-none) echo "${tab}_none" ;;
	pgvector-bq) echo "${tab}_vec_bq" ;;
	esac
}

# Prints the base table the copy of system $2 is made from (<$1> or <$1>_vec).
system_source_table() {
	case $2 in
	pgvector*) echo "${1}_vec" ;;
	*) echo "$1" ;;
	esac
}

# Prints the cast of a real[] query parameter to the column type of system $1.
system_cast() {
	case $1 in
	pgvector*) echo '::vector' ;;
	*) echo '' ;;
	esac
}

# Loads data set $1 into <tab> (real[]) and, with pgvector, <tab>_vec, both
# with the columns' default storage; creates the staging tables the insert
# runs copy from, and with HANNOY_BENCH_PLAIN=1 the STORAGE PLAIN copies.
load_dataset() {
	local ds=$1 tab=$2 dir=$3 dims=$4 rows=$5 noise=$6 stage_rows
	stage_rows=$((2 * INSERT_ROWS < rows ? 2 * INSERT_ROWS : rows))
	say "load: $ds ($rows rows, $dims dimensions) into $tab"
	cluster_psql <<EOF
DROP TABLE IF EXISTS $tab, ${tab}_vec, ${tab}_stage, ${tab}_vec_stage CASCADE;
DROP SEQUENCE IF EXISTS ${tab}_stage_seq, ${tab}_vec_stage_seq;
-- sel = id % 100 drives the filtered queries: sel < 10 keeps 10%, sel < 1 keeps 1%.
-- The vector column keeps its type's default storage (real[]: EXTENDED, so long
-- arrays are compressed or moved to TOAST), as users store it.
CREATE TABLE $tab (id int PRIMARY KEY, label int, v real[],
                   sel int GENERATED ALWAYS AS (id % 100) STORED);
ALTER TABLE $tab SET (parallel_workers = $((NPROC - 1)));
EOF
	cluster_psql -c "\\copy $tab (id, label, v) FROM '$dir/base.copy'"
	# Staging rows for the insert runs: base vectors plus uniform noise of
	# width $noise, with new ids; a sequence hands them out one by one.
	cluster_psql <<EOF
SELECT setseed(0.25) \g /dev/null
CREATE TABLE ${tab}_stage AS
  SELECT $rows + id AS id, label,
         (SELECT array_agg(x + (random() - 0.5) * $noise ORDER BY o)::real[]
            FROM unnest(v) WITH ORDINALITY AS u(x, o)) AS v
    FROM $tab WHERE id <= $stage_rows;
ALTER TABLE ${tab}_stage ADD PRIMARY KEY (id);
CREATE SEQUENCE ${tab}_stage_seq START $((rows + 1));
EOF
	if ((PGVECTOR)); then
		cluster_psql <<EOF
CREATE TABLE ${tab}_vec (id int PRIMARY KEY, label int, v vector($dims),
                         sel int GENERATED ALWAYS AS (id % 100) STORED);
ALTER TABLE ${tab}_vec SET (parallel_workers = $((NPROC - 1)));
INSERT INTO ${tab}_vec (id, label, v) SELECT id, label, v::vector($dims) FROM $tab;
CREATE TABLE ${tab}_vec_stage AS SELECT id, label, v::vector($dims) AS v FROM ${tab}_stage;
ALTER TABLE ${tab}_vec_stage ADD PRIMARY KEY (id);
CREATE SEQUENCE ${tab}_vec_stage_seq START $((rows + 1));
EOF
	fi
	local system plain
	if ((PLAIN)); then
		# The extra line: the same rows with the vectors inline in the heap (no
		# TOAST, no compression); only builds and unfiltered queries use them.
		for system in hannoy pgvector; do
			[[ $system == hannoy ]] || ((PGVECTOR)) || continue
			plain=$(system_table "$tab" "$system-plain")
			cluster_psql <<EOF
DROP TABLE IF EXISTS $plain CASCADE;
CREATE TABLE $plain (LIKE $(system_table "$tab" "$system") INCLUDING ALL);
ALTER TABLE $plain ALTER v SET STORAGE PLAIN;
ALTER TABLE $plain SET (parallel_workers = $((NPROC - 1)));
INSERT INTO $plain (id, label, v) SELECT id, label, v FROM $(system_table "$tab" "$system");
EOF
		done
	fi
	for system in $(quantized_systems); do
		# The same rows with the default storage, one table per variant: two hannoy
		# indexes on one column would leave the choice between them to the planner.
		cluster_psql <<EOF
DROP TABLE IF EXISTS $(system_table "$tab" "$system") CASCADE;
CREATE TABLE $(system_table "$tab" "$system") (LIKE $(system_source_table "$tab" "$system") INCLUDING ALL);
ALTER TABLE $(system_table "$tab" "$system") SET (parallel_workers = $((NPROC - 1)));
INSERT INTO $(system_table "$tab" "$system") (id, label, v)
  SELECT id, label, v FROM $(system_source_table "$tab" "$system");
EOF
	done
	cluster_psql -c "VACUUM ANALYZE" -c "CHECKPOINT"
	for system in $(systems); do
		printf 'heap: %s (%s, %s)\n' \
			"$(cluster_value "SELECT pg_size_pretty(pg_table_size('$(system_table "$tab" "$system")'))")" \
			"$(system_table "$tab" "$system")" "$system"
	done
}

# The knn statement of a system on table $1 with the parameter's cast $2,
# distance operator $3 and optional condition $4: prints the SQL.
knn_sql() {
	local table=$1 cast=$2 op=$3 where=${4:-}
	# shellcheck disable=SC2016 # $1 is the statement's parameter, not a shell variable
	printf 'SELECT id, v %s $1::real[]%s AS d FROM %s %sORDER BY v %s $1::real[]%s LIMIT %s' \
		"$op" "$cast" "$table" "${where:+WHERE $where }" "$op" "$cast" "$K"
}

# The knn statement of pgvector's binary-quantized index on table $1 ($2 dimensions, operator
# $3): ef_search candidates by Hamming distance of binary_quantize, re-ranked exactly in SQL,
# as pgvector's README writes it; the subquery's LIMIT reads hnsw.ef_search.  Prints the SQL.
bq_knn_sql() {
	local table=$1 dims=$2 op=$3
	# shellcheck disable=SC2016 # $1 is the statement's parameter, not a shell variable
	printf 'SELECT id, v %s $1::real[]::vector AS d FROM (SELECT id, v FROM %s ORDER BY binary_quantize(v)::bit(%s) <~> binary_quantize($1::real[]::vector) LIMIT current_setting('"'"'hnsw.ef_search'"'"')::int) c ORDER BY d LIMIT %s' \
		"$op" "$table" "$dims" "$K"
}

# The floor statement: the knn statement's shape and vector parameter (operator
# $2), but the 10 rows come from a primary-key range of table $1.
floor_sql() {
	knn_sql "$1" '' "$2" 'id BETWEEN 1 AND 10'
}

# Runs the query client with common arguments plus "$@", logging to the run's log.
query_client() {
	local cmd=("$TOOLS/hannoy_bench" query --conninfo "$CONNINFO" --k "$K" --repeat "$REPEAT"
		--warmup --explain --pin-client "$CPU" --pin-backend "$CPU" --csv "$OUT/queries.csv"
		--m "$M" "$@")
	printf '+ %s\n' "${cmd[*]@Q}"
	"${cmd[@]}"
}

# Measures the SQL floor and the exact scan of data set $1, unfiltered and
# filtered, before any vector index exists.
run_baselines() {
	local ds=$1 tab=$2 dir=$3 exact_queries=$4 op below
	op=$(metric_operator "$(dataset_metric "$ds")")
	say "baselines: $ds SQL floor and exact scan ($exact_queries queries)"
	query_client --dataset "$ds" --queries "$dir/queries.txt" --groundtruth "$dir/groundtruth.tsv" \
		--target floor --sql "$(floor_sql "$tab" "$op")"
	query_client --dataset "$ds" --queries "$dir/queries.txt" --groundtruth "$dir/groundtruth.tsv" \
		--max-queries "$exact_queries" --target exact --setup "SET enable_indexscan = off" \
		--sql "$(knn_sql "$tab" '' "$op")"
	for below in 10 1; do
		query_client --dataset "$ds" --filter "$below%" --queries "$dir/queries.txt" \
			--groundtruth "$dir/groundtruth-sel$below.tsv" --max-queries "$exact_queries" \
			--target exact --setup "SET enable_indexscan = off" \
			--sql "$(knn_sql "$tab" '' "$op" "sel < $below")"
	done
}

# Samples the peak RSS (VmHWM, kB) of the cluster's parallel workers into file $1 until killed.
sample_workers() {
	local out=$1 max=0 pid kb
	while true; do
		for pid in $(pgrep -P "$POSTMASTER_PID" -f 'parallel worker' || true); do
			kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
			if [[ -n $kb ]] && ((kb > max)); then
				max=$kb
				echo "$max" >"$out"
			fi
		done
		sleep 0.1
	done
}

# Prints a maintenance_work_mem (MB) large enough for pgvector to build the
# graph of $1 rows of $2 dimensions in memory: per element the vector, about
# 2m + 1 neighbour candidates of 16 bytes and some bookkeeping, with a margin.
build_memory_mb() {
	local rows=$1 dims=$2
	echo $((rows * (dims * 4 + 64 * M) * 5 / 4 / 1048576 + 64))
}

# Builds one index and appends its build time, size and peak memory to builds.csv.
build_index() {
	local ds=$1 system=$2 table=$3 index=$4 efc=$5 rows=$6 dims=$7 create settings size_sql threads
	local memory metric
	memory="SET maintenance_work_mem = '$(build_memory_mb "$rows" "$dims")MB'"
	metric=$(dataset_metric "$ds")
	local quantizer=
	case $system in
	hannoy-binary) quantizer=", quantizer = 'binary'" ;;
	hannoy-scalar8) quantizer=", quantizer = 'scalar8'" ;;
	hannoy-binary-heap) quantizer=", quantizer = 'binary', rerank = 'heap'" ;;
	hannoy-scalar8-heap) quantizer=", quantizer = 'scalar8', rerank = 'heap'" ;;
	hannoy-none) quantizer=", quantizer = 'none'" ;;
	esac
	case ${system%-plain} in
	hannoy | hannoy-binary* | hannoy-scalar8* | hannoy-none)
		settings="SET hannoy.build_threads = $NPROC"
		create="CREATE INDEX $index ON $table USING hannoy (v real_${metric}_ops) WITH (m = $M, ef_construction = $efc$quantizer)"
		size_sql="SELECT hannoy_index_size('$index')"
		threads=$NPROC
		;;
	pgvector)
		settings="SET max_parallel_maintenance_workers = $((NPROC - 1))"
		create="CREATE INDEX $index ON $table USING hnsw (v vector_${metric}_ops) WITH (m = $M, ef_construction = $efc)"
		size_sql="SELECT pg_relation_size('$index')"
		threads=$NPROC
		;;
	pgvector-bq)
		settings="SET max_parallel_maintenance_workers = $((NPROC - 1))"
		create="CREATE INDEX $index ON $table USING hnsw ((binary_quantize(v)::bit($dims)) bit_hamming_ops) WITH (m = $M, ef_construction = $efc)"
		size_sql="SELECT pg_relation_size('$index')"
		threads=$NPROC
		;;
	esac
	say "build: $system $ds m=$M ef_construction=$efc (${memory#SET })"
	local workers_file=$CLUSTER_DIR/workers.hwm sampler out t0 t1 hwm worker_hwm size build_s
	rm -f -- "$workers_file"
	sample_workers "$workers_file" &
	sampler=$!
	# One session: the server's clock around CREATE INDEX, then the backend's own VmHWM.
	: >"$CLUSTER_DIR/build.notices"
	out=$(cluster_psql -tA -c "$memory" -c "$settings" \
		-c "SELECT extract(epoch FROM clock_timestamp())" \
		-c "$create" -c "SELECT extract(epoch FROM clock_timestamp())" \
		-c "SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\s*([0-9]+)')" \
		2>"$CLUSTER_DIR/build.notices")
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	if [[ -s $CLUSTER_DIR/build.notices ]]; then
		sed "s/^/$system build: /" "$CLUSTER_DIR/build.notices" | tee -a "$OUT/build-notices.txt"
		if grep -q 'no longer fits into maintenance_work_mem' "$CLUSTER_DIR/build.notices"; then
			printf 'run.sh: warning: the %s build did not fit in %s; its time is not an in-memory build\n' \
				"$system" "$memory" >&2
		fi
	fi
	{ read -r t0; read -r t1; read -r hwm; } <<<"$out"
	worker_hwm=$(cat "$workers_file" 2>/dev/null || true)
	size=$(cluster_value "$size_sql")
	if [[ $system == hannoy* ]]; then
		# The sidecar's bytes by part (hannoy_index_space): report.py divides them by the rows.
		[[ -f $OUT/space.csv ]] || echo "dataset,system,m,efc,rows,part,entries,pages,bytes" >"$OUT/space.csv"
		cluster_psql -tA -F, -c "SELECT part, entries, pages, bytes FROM hannoy_index_space('$index')" |
			sed "s/^/$ds,$system,$M,$efc,$rows,/" >>"$OUT/space.csv"
	fi
	build_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	[[ -f $OUT/builds.csv ]] ||
		echo "dataset,system,m,efc,rows,threads,build_s,size_bytes,peak_rss_kb,worker_peak_rss_kb" \
			>"$OUT/builds.csv"
	echo "$ds,$system,$M,$efc,$rows,$threads,$build_s,$size,$hwm,$worker_hwm" >>"$OUT/builds.csv"
	printf '%s: %s s, %s bytes, backend peak RSS %s kB%s\n' "$system" "$build_s" "$size" "$hwm" \
		"${worker_hwm:+, parallel worker peak RSS $worker_hwm kB}"
	cluster_psql -c "ANALYZE $table"
}

# Measures recall and QPS of hannoy (and pgvector) on the built indexes: per
# ef_search value the systems' passes alternate, and the SQL floor's passes
# alternate with them, so that each setting has a floor measured at the same
# time (the machine's speed drifts).
run_queries() {
	local ds=$1 tab=$2 dir=$3 efc=$4 dims=$5 op system guc sql targets=()
	op=$(metric_operator "$(dataset_metric "$ds")")
	say "queries: $ds ef_construction=$efc, ef_search $EF_LIST"
	for system in $(systems); do
		[[ $system == hannoy* ]] && guc=hannoy.ef_search || guc=hnsw.ef_search
		if [[ $system == pgvector-bq ]]; then
			sql=$(bq_knn_sql "$(system_table "$tab" "$system")" "$dims" "$op")
		else
			sql=$(knn_sql "$(system_table "$tab" "$system")" "$(system_cast "$system")" "$op")
		fi
		targets+=(--target "$system" --setup "SET $guc = {ef}" --sql "$sql")
	done
	targets+=(--target floor --sql "$(floor_sql "$tab" "$op")")
	query_client --dataset "$ds" --efc "$efc" --ef "$EF_LIST" --queries "$dir/queries.txt" \
		--groundtruth "$dir/groundtruth.tsv" "${targets[@]}"
}

# Measures filtered queries (10% and 1% of the rows pass) on the built indexes.
run_filtered() {
	local ds=$1 tab=$2 dir=$3 efc=$4 op targets=()
	op=$(metric_operator "$(dataset_metric "$ds")")
	# Filtered: the vector indexes are forced (enable_seqscan = off) because at 1%
	# a planner may prefer a sequential scan; the exact baseline shows what that costs.
	local below
	for below in 10 1; do
		say "filtered queries: $ds ef_construction=$efc, sel < $below ($below%), ef_search $FILTER_EF"
		targets=(--target hannoy --setup 'SET hannoy.ef_search = {ef}'
			--setup 'SET enable_seqscan = off' --sql "$(knn_sql "$tab" '' "$op" "sel < $below")")
		if ((PGVECTOR)); then
			# Without iterative scans pgvector returns fewer than k rows once the filter
			# rejects candidates; relaxed_order is the counterpart of hannoy's resumed scan.
			targets+=(--target pgvector --setup 'SET hnsw.ef_search = {ef}'
				--setup 'SET hnsw.iterative_scan = relaxed_order' --setup 'SET enable_seqscan = off'
				--sql "$(knn_sql "${tab}_vec" '::vector' "$op" "sel < $below")")
		fi
		query_client --dataset "$ds" --efc "$efc" --filter "$below%" --ef "$FILTER_EF" \
			--queries "$dir/queries.txt" --groundtruth "$dir/groundtruth-sel$below.tsv" \
			"${targets[@]}"
	done
}

# Inserts INSERT_ROWS staged rows into the built index of $2 with pgbench, one
# row per transaction, with 1 and then 8 clients; appends to inserts.csv.  Each
# system inserts its rows in two halves, in the order A B B A (the second pair
# reversed), so the machine's drift and the warming of a fresh connection hit
# both systems alike; a rate is all its rows over the time of both halves.
run_inserts() {
	local ds=$1 tab=$2 efc=$3 system clients table script log tps before after half part
	local -A rows seconds
	[[ -f $OUT/inserts.csv ]] || echo "dataset,system,m,efc,clients,rows,seconds,rows_per_s" \
		>"$OUT/inserts.csv"
	for clients in 1 8; do
		half=$((INSERT_ROWS / clients / 2))
		rows=() seconds=()
		for part in hannoy pgvector pgvector hannoy; do
			system=$part
			[[ $system == hannoy ]] && table=$tab || table=${tab}_vec
			((PGVECTOR)) || [[ $system == hannoy ]] || continue
			say "inserts: $system $ds, $((half * clients)) rows, $clients client(s)"
			script=$OUT/insert-$table.sql
			echo "INSERT INTO $table (id, label, v) SELECT id, label, v FROM ${table}_stage WHERE id = (SELECT nextval('${table}_stage_seq'));" >"$script"
			log=$OUT/pgbench-$ds-$system-c$clients.txt
			before=$(cluster_value "SELECT count(*) FROM $table")
			"$PG_BIN/pgbench" -n -h "$CLUSTER_DIR" -p "$PORT" -U postgres -f "$script" \
				-c "$clients" -j "$((clients < NPROC ? clients : NPROC))" \
				-t "$half" postgres >"$log.part" 2>&1 || {
				cat "$log.part" >&2
				die "pgbench failed"
			}
			cat "$log.part" >>"$log"
			after=$(cluster_value "SELECT count(*) FROM $table")
			tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log.part")
			rm -f "$log.part"
			[[ -n $tps ]] || die "pgbench printed no rate into $log"
			((after - before == half * clients)) ||
				die "pgbench inserted $((after - before)) rows into $table, expected $((half * clients))"
			rows[$system]=$((${rows[$system]:-0} + after - before))
			seconds[$system]=$(awk -v s="${seconds[$system]:-0}" -v n="$((after - before))" -v t="$tps" 'BEGIN { printf "%.3f", s + n / t }')
		done
		for system in hannoy pgvector; do
			[[ -n ${rows[$system]:-} ]] || continue
			tps=$(awk -v n="${rows[$system]}" -v s="${seconds[$system]}" 'BEGIN { printf "%.6f", n / s }')
			echo "$ds,$system,$M,$efc,$clients,${rows[$system]},${seconds[$system]},$tps" >>"$OUT/inserts.csv"
			printf '%s, %s client(s): %.0f rows/s\n' "$system" "$clients" "$tps"
		done
	done
}

# Drops the indexes, removes inserted rows and resets the staging sequences.
reset_tables() {
	local tab=$1 rows=$2 t system
	for system in $(systems); do
		t=$(system_table "$tab" "$system")
		cluster_psql -c "DROP INDEX IF EXISTS ${t}_idx" -c "DELETE FROM $t WHERE id > $rows"
		if [[ $system == hannoy || $system == pgvector ]]; then
			cluster_psql -c "ALTER SEQUENCE ${t}_stage_seq RESTART"
		fi
		cluster_psql -c "VACUUM ANALYZE $t" -c "CHECKPOINT"
	done
}

# Runs hnswlib in-process, single thread, pinned, for one ef_construction.
run_hnswlib() {
	local ds=$1 dir=$2 efc=$3
	say "hnswlib: $ds m=$M ef_construction=$efc, one thread on CPU $CPU"
	taskset -c "$CPU" "$TOOLS/hnswlib_bench" --base "$dir/base.copy" --queries "$dir/queries.txt" \
		--groundtruth "$dir/groundtruth.tsv" --k "$K" --m "$M" --efc "$efc" --ef "$EF_LIST" \
		--repeat "$REPEAT" --warmup --pin "$CPU" --dataset "$ds" --metric "$(dataset_metric "$ds")" \
		--csv-queries "$OUT/queries.csv" --csv-builds "$OUT/builds.csv"
}

# Runs every measurement of data set $1.
bench_dataset() {
	local ds=$1 dir tab dims rows noise exact_queries efc order system t
	dir=$(dataset_dir "$ds")
	case $ds in
	random-xs-20) tab=xs20 noise=0.5 exact_queries=1000 ;;
	fashion-mnist) tab=fmnist noise=16 exact_queries=100 ;;
	fashion-mnist-cosine) tab=fmnist_cos noise=16 exact_queries=100 ;;
	clustered-angular) tab=angular noise=0.05 exact_queries=1000 ;;
	clustered-cosine) tab=cosine noise=0.1 exact_queries=1000 ;;
	uniform-64) tab=uniform noise=0.1 exact_queries=100 ;;
	clustered-128) tab=clustered noise=0.5 exact_queries=20 ;;
	esac
	if ((SMOKE)); then exact_queries=$((exact_queries < 200 ? exact_queries : 200)); fi
	dims=$(head -n 1 "$dir/queries.txt" | tr -cd , | wc -c)
	dims=$((dims + 1))
	rows=$(wc -l <"$dir/base.copy")
	timed "$ds" load load_dataset "$ds" "$tab" "$dir" "$dims" "$rows" "$noise"
	timed "$ds" baselines run_baselines "$ds" "$tab" "$dir" "$exact_queries"
	local reversed
	read -r -a order <<<"$(systems)"
	for efc in ${EFC_LIST//,/ }; do
		for system in "${order[@]}"; do
			t=$(system_table "$tab" "$system")
			timed "$ds" "build $system efc=$efc" build_index "$ds" "$system" "$t" "${t}_idx" \
				"$efc" "$rows" "$dims"
		done
		# The next round builds in the reverse order, so no system always goes first.
		reversed=()
		for system in "${order[@]}"; do reversed=("$system" "${reversed[@]}"); done
		order=("${reversed[@]}")
		timed "$ds" "queries efc=$efc" run_queries "$ds" "$tab" "$dir" "$efc" "$dims"
		timed "$ds" "filtered efc=$efc" run_filtered "$ds" "$tab" "$dir" "$efc"
		if [[ $efc == "$INSERT_EFC" ]]; then
			timed "$ds" "inserts efc=$efc" run_inserts "$ds" "$tab" "$efc"
		fi
		reset_tables "$tab" "$rows"
		if [[ $HNSWLIB == 1 ]]; then
			timed "$ds" "hnswlib efc=$efc" run_hnswlib "$ds" "$dir" "$efc"
		fi
	done
	# HANNOY_BENCH_KEEP=1 keeps the tables too, for profiling by hand.
	if [[ ${HANNOY_BENCH_KEEP:-0} != 1 ]]; then
		cluster_psql -c "DROP TABLE IF EXISTS $tab, ${tab}_stage, ${tab}_vec, ${tab}_vec_stage, ${tab}_plain, ${tab}_vec_plain, ${tab}_bin, ${tab}_s8, ${tab}_none, ${tab}_vec_bq CASCADE"
	fi
}

# Writes summary.md and the plots from the CSV files.
write_report() {
	say "report: $OUT/summary.md"
	/usr/bin/python3 "$BENCH/report.py" "$OUT"
	local gp
	for gp in "$OUT"/plot-*.gp; do
		[[ -f $gp ]] || continue
		(cd "$OUT" && gnuplot "$gp")
	done
	if ((!SMOKE)); then
		mkdir -p "$BENCH/results/latest"
		rm -f -- "$BENCH/results/latest/"*
		cp -- "$OUT/summary.md" "$OUT"/*.png "$BENCH/results/latest/"
		printf 'Run: %s\n' "${OUT#"$ROOT/"}" >"$BENCH/results/latest/SOURCE"
	fi
	cat "$OUT/summary.md"
}

main() {
	configure "$@"
	cluster_traps HANNOY_BENCH_KEEP print_results_dir
	OUT=$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)
	if ((SMOKE)); then OUT+=-smoke; fi
	mkdir -p "$OUT"
	exec > >(tee -a "$OUT/log.txt") 2>&1
	echo "dataset,step,seconds" >"$OUT/timings.csv"
	cd "$ROOT"
	timed - setup setup
	timed - tools build_tools
	local ds
	for ds in ${DATASETS//,/ }; do
		timed "$ds" prepare prepare_dataset "$ds"
	done
	timed - cluster start_cluster
	write_machine_info
	for ds in ${DATASETS//,/ }; do
		bench_dataset "$ds"
	done
	write_report
	say "bench: done in $(seconds_since "$RUN_START") s"
}

main "$@"
