#!/usr/bin/env bash
# Measures WAL bytes (DESIGN.md "Replication and recovery: What is logged"):
# a build over 10,000 Fashion-MNIST rows (784 floats, m 16, ef_construction
# 64, one build thread) and 1,000 one-row inserts, each in its own
# transaction, into the indexed table and into a table without an index
# (both columns STORAGE PLAIN, so the heap's WAL is the uncompressed row's).
# A CHECKPOINT comes before each step.  Run as the postgres user, with the
# bin directory of a PostgreSQL 15 that has hannoy (or pgvector) installed:
#
#   bench/wal_bytes.sh <bindir> hannoy 54901
#   bench/wal_bytes.sh <bindir> pgvector 54902
#
# It starts a throwaway cluster in $WAL_BYTES_DIR (default /tmp/hannoy-wal-bytes),
# which must hold fashion.tsv: "id<TAB>{p1,...,p784}" lines of the first
# 11,000 training images (made by the python line below, as root or postgres).
#
#   python3 -c 'import gzip,struct;f=gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");f.read(16);d=f.read(784*11000);print("\n".join("%d\t{%s}"%(i,",".join(map(str,d[i*784:i*784+784]))) for i in range(11000)))' > fashion.tsv
set -euo pipefail
BIN=$1; SYS=$2; PORT=$3
W=${WAL_BYTES_DIR:-/tmp/hannoy-wal-bytes}
D=$W/$SYS
rm -rf $D
$BIN/initdb -D $D -A trust >/dev/null
cat >> $D/postgresql.conf <<CONF
port = $PORT
unix_socket_directories = '$W'
wal_level = replica
max_wal_size = 4GB
checkpoint_timeout = 1h
maintenance_work_mem = 1GB
max_parallel_maintenance_workers = 0
autovacuum = off
jit = off
CONF
if [ $SYS = hannoy ]; then echo "shared_preload_libraries = 'hannoy'" >> $D/postgresql.conf; echo "hannoy.build_threads = 1" >> $D/postgresql.conf; fi
$BIN/pg_ctl -D $D -l $D/log -w start >/dev/null
P="$BIN/psql -X -q -At -h $W -p $PORT -d postgres -v ON_ERROR_STOP=1"
if [ $SYS = hannoy ]; then
  $P -c "CREATE EXTENSION hannoy; CREATE EXTENSION pg_walinspect"
  TYPE='real[]'; IDX="USING hannoy (v real_l2_ops) WITH (m = 16, ef_construction = 64)"
else
  $P -c "CREATE EXTENSION vector"
  TYPE='vector(784)'; IDX="USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64)"
fi
$P -c "CREATE TABLE src (id int, v real[]); ALTER TABLE src ALTER COLUMN v SET STORAGE PLAIN; COPY src FROM '$W/fashion.tsv'; CREATE INDEX ON src (id)"
$P -c "CREATE TABLE t (id int, v $TYPE); CREATE TABLE h (id int, v $TYPE)"
$P -c "INSERT INTO t SELECT id, v::$TYPE FROM src WHERE id < 10000"
$P -c "ALTER TABLE t ALTER COLUMN v SET STORAGE PLAIN; ALTER TABLE h ALTER COLUMN v SET STORAGE PLAIN" || true
$P -c "VACUUM FREEZE"; $P -c "CHECKPOINT"
a=$($P -c "SELECT pg_current_wal_insert_lsn()")
$P -c "CREATE INDEX t_v ON t $IDX"
b=$($P -c "SELECT pg_current_wal_insert_lsn()")
echo "$SYS build of 10000 rows: $($P -c "SELECT pg_wal_lsn_diff('$b','$a')") WAL bytes"
if [ $SYS = hannoy ]; then $P -c "SELECT resource_manager, record_type, count(*), sum(record_length), min(description) FROM pg_get_wal_records_info('$a','$b') GROUP BY 1, 2 ORDER BY 4 DESC LIMIT 8"; fi
$P -c "CHECKPOINT"
# 1000 single-row inserts, each its own transaction: with the index, and into a heap without one
for tab in t h; do
  a=$($P -c "SELECT pg_current_wal_insert_lsn()")
  for i in $(seq 10000 10999); do echo "INSERT INTO $tab SELECT id, v::$TYPE FROM src WHERE id = $i;"; done | $P >/dev/null
  b=$($P -c "SELECT pg_current_wal_insert_lsn()")
  $P -c "SELECT attstorage FROM pg_attribute WHERE attrelid = '$tab'::regclass AND attname = 'v'"; echo "$SYS 1000 inserts into $tab: $($P -c "SELECT pg_wal_lsn_diff('$b','$a') / 1000") WAL bytes per row"
  if [ $SYS = hannoy ] && [ $tab = t ]; then $P -c "SELECT resource_manager, record_type, count(*), sum(record_length), min(description) FROM pg_get_wal_records_info('$a','$b') GROUP BY 1, 2 ORDER BY 4 DESC LIMIT 8"; fi
done
$BIN/pg_ctl -D $D -w stop >/dev/null
