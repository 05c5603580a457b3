#!/usr/bin/env bash
# Measures a hot standby's replay lag under an insert load (DESIGN.md
# "Replication and recovery"): a primary with the first $ROWS Fashion-MNIST
# training images (784 floats, default column storage) and an index (hannoy,
# or pgvector's hnsw: m 16, ef_construction 64), a streaming standby made
# with pg_basebackup, then pgbench with $CLIENTS clients inserting copies of
# those images for $SECONDS seconds.  Every second it samples the standby's
# replay position against the primary's WAL position; it prints the insert
# rate, the largest and the mean lag in bytes and pg_stat_replication's
# replay_lag, and how long the standby took to catch up after the load.
# Run as the postgres user, with the bin directory of a PostgreSQL 15 that
# has hannoy (or pgvector) installed:
#
#   bench/standby_lag.sh <bindir> hannoy 54921 [rows clients seconds]
#   bench/standby_lag.sh <bindir> pgvector 54923 [rows clients seconds]
#
# It starts two throwaway clusters in $STANDBY_LAG_DIR (default
# /tmp/hannoy-standby-lag), which must hold fashion.tsv as made for
# bench/wal_bytes.sh.
set -euo pipefail
BIN=$1; SYS=$2; PORT=$3; ROWS=${4:-20000}; CLIENTS=${5:-8}; SECS=${6:-30}
W=${STANDBY_LAG_DIR:-/tmp/hannoy-standby-lag}
P1=$W/$SYS-primary; S1=$W/$SYS-standby
rm -rf "$P1" "$S1"
"$BIN"/initdb -D "$P1" -A trust >/dev/null
cat >> "$P1"/postgresql.conf <<CONF
port = $PORT
unix_socket_directories = '$W'
wal_level = replica
max_wal_senders = 4
max_wal_size = 4GB
maintenance_work_mem = 1GB
autovacuum = off
jit = off
CONF
if [ "$SYS" = hannoy ]; then echo "shared_preload_libraries = 'hannoy'" >> "$P1"/postgresql.conf; fi
echo "local replication all trust" >> "$P1"/pg_hba.conf
"$BIN"/pg_ctl -D "$P1" -l "$P1"/log -w start >/dev/null
P="$BIN/psql -X -q -At -h $W -p $PORT -d postgres -v ON_ERROR_STOP=1"
if [ "$SYS" = hannoy ]; then
  $P -c "CREATE EXTENSION hannoy"
  TYPE='real[]'; IDX="USING hannoy (v real_l2_ops) WITH (m = 16, ef_construction = 64)"
else
  $P -c "CREATE EXTENSION vector"
  TYPE='vector(784)'; IDX="USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64)"
fi
$P -c "CREATE TABLE src (id int PRIMARY KEY, v real[])"
$P -c "COPY src FROM PROGRAM 'head -n $ROWS $W/fashion.tsv'"
$P -c "CREATE TABLE f (id bigserial PRIMARY KEY, v $TYPE)"
$P -c "INSERT INTO f (v) SELECT v::$TYPE FROM src ORDER BY id"
$P -c "CREATE INDEX f_v ON f $IDX"
"$BIN"/pg_basebackup -D "$S1" -h "$W" -p "$PORT" -R -X stream --checkpoint fast
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$S1"/postgresql.conf
"$BIN"/pg_ctl -D "$S1" -l "$S1"/log -w start >/dev/null
S="$BIN/psql -X -q -At -h $W -p $((PORT + 1)) -d postgres"
# the standby uses the index before the load begins (a hannoy standby rebuilds it first)
q="EXPLAIN (COSTS OFF) SELECT id FROM f ORDER BY v <-> (SELECT v FROM f WHERE id = 1) LIMIT 10"
until $S -c "$q" 2>/dev/null | grep -q "Index Scan using f_v"; do sleep 0.5; done
cat > "$W"/insert.sql <<SQL
\set r random(1, $ROWS)
INSERT INTO f (v) SELECT v::$TYPE FROM src WHERE id = :r - 1;
SQL
n0=$($P -c "SELECT count(*) FROM f")
"$BIN"/pgbench -n -h "$W" -p "$PORT" -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -f "$W"/insert.sql postgres \
  > "$W"/$SYS-pgbench.log 2>&1 &
bench=$!
max=0; sum=0; k=0; maxlag=''
while kill -0 $bench 2>/dev/null; do
  row=$($P -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, coalesce(replay_lag::text, '0') FROM pg_stat_replication" || true)
  b=${row%%|*}; lag=${row#*|}
  if [ -n "$b" ]; then
    sum=$((sum + b)); k=$((k + 1))
    if [ "$b" -gt "$max" ]; then max=$b; maxlag=$lag; fi
  fi
  sleep 1
done
wait $bench || true
t0=$(date +%s.%N)
target=$($P -c "SELECT pg_current_wal_lsn()")
until [ "$($S -c "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '$target') >= 0")" = t ]; do sleep 0.1; done
t1=$(date +%s.%N)
n1=$($P -c "SELECT count(*) FROM f")
echo "$SYS: $CLIENTS clients, $SECS s: $(( (n1 - n0) / SECS )) rows/s inserted"
echo "$SYS: replay lag behind the primary's WAL: max $max bytes (replay_lag $maxlag), mean $(( k > 0 ? sum / k : 0 )) bytes over $k samples"
echo "$SYS: caught up $(echo "$t1 - $t0" | bc) s after the load ended"
if [ "$SYS" = hannoy ]; then
  until [ "$($S -c "SELECT staged_rows FROM hannoy_index_stats('f_v')")" = 0 ]; do sleep 1; done
  echo "$SYS: every row linked $(echo "$(date +%s.%N) - $t0" | bc) s after the load ended"
fi
"$BIN"/pg_ctl -D "$S1" -w stop >/dev/null
"$BIN"/pg_ctl -D "$P1" -w stop >/dev/null
