#!/usr/bin/env bash
# Measures how long a hot standby takes to rebuild from its own table a
# hannoy index it cannot trust (DESIGN.md "Rebuilding a replica from the
# table"): a primary with the first $ROWS Fashion-MNIST training images
# (784 floats, default column storage) and a hannoy index (m 16,
# ef_construction 64), a standby made with pg_basebackup after the build.
# Prints the primary's CREATE INDEX time, then, from the standby's start:
# the time until its planner uses the index (the table's rows staged) and
# until the replica linker has linked every staged row.  Run as the postgres
# user, with the bin directory of a PostgreSQL 15 that has hannoy installed:
#
#   bench/standby_rebuild.sh <bindir> 54911 [rows]
#
# It starts two throwaway clusters in $STANDBY_REBUILD_DIR (default
# /tmp/hannoy-standby-rebuild), which must hold fashion.tsv as made for
# bench/wal_bytes.sh (enough lines for $ROWS rows).
set -euo pipefail
BIN=$1; PORT=$2; ROWS=${3:-60000}
W=${STANDBY_REBUILD_DIR:-/tmp/hannoy-standby-rebuild}
P1=$W/primary; S1=$W/standby
rm -rf "$P1" "$S1"
"$BIN"/initdb -D "$P1" -A trust >/dev/null
cat >> "$P1"/postgresql.conf <<CONF
port = $PORT
unix_socket_directories = '$W'
shared_preload_libraries = 'hannoy'
wal_level = replica
max_wal_senders = 4
max_wal_size = 4GB
maintenance_work_mem = 1GB
autovacuum = off
jit = off
CONF
echo "local replication all trust" >> "$P1"/pg_hba.conf
"$BIN"/pg_ctl -D "$P1" -l "$P1"/log -w start >/dev/null
P="$BIN/psql -X -q -At -h $W -p $PORT -d postgres -v ON_ERROR_STOP=1"
$P -c "CREATE EXTENSION hannoy"
$P -c "CREATE TABLE f (id int PRIMARY KEY, v real[])"
$P -c "COPY f FROM PROGRAM 'head -n $ROWS $W/fashion.tsv'"
t0=$(date +%s.%N)
$P -c "CREATE INDEX f_v ON f USING hannoy (v real_l2_ops) WITH (m = 16, ef_construction = 64)"
t1=$(date +%s.%N)
echo "primary: CREATE INDEX over $($P -c 'SELECT count(*) FROM f') rows: $(echo "$t1 - $t0" | bc) s"
"$BIN"/pg_basebackup -D "$S1" -h "$W" -p "$PORT" -R -X stream --checkpoint fast
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$S1"/postgresql.conf
S="$BIN/psql -X -q -At -h $W -p $((PORT + 1)) -d postgres"
t0=$(date +%s.%N)
"$BIN"/pg_ctl -D "$S1" -l "$S1"/log -w start >/dev/null
q="EXPLAIN (COSTS OFF) SELECT id FROM f ORDER BY v <-> (SELECT v FROM f WHERE id = 1) LIMIT 10"
until $S -c "$q" 2>/dev/null | grep -q "Index Scan using f_v"; do sleep 0.2; done
t1=$(date +%s.%N)
echo "standby: index usable (rows staged) $(echo "$t1 - $t0" | bc) s after start"
until [ "$($S -c "SELECT staged_rows FROM hannoy_index_stats('f_v')" 2>/dev/null)" = 0 ]; do sleep 1; done
t2=$(date +%s.%N)
echo "standby: every row linked $(echo "$t2 - $t0" | bc) s after start"
grep "hannoy rebuilt" "$S1"/log || true
"$BIN"/pg_ctl -D "$S1" -w stop >/dev/null
"$BIN"/pg_ctl -D "$P1" -w stop >/dev/null
