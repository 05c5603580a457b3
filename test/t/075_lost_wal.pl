# Rows whose heap WAL a crash lost (DESIGN.md "WAL before sidecar"): an
# insert no longer waits for its heap rows' WAL to reach the disk before the
# sidecar records them; it notes them as unflushed instead, and the first
# process that opens the sidecar after a crash removes the entries whose
# heap rows are gone.
#
# The WAL writer is stopped (SIGSTOP) while sessions commit inserts with
# synchronous_commit = off, so their WAL stays in shared memory; then the WAL
# writer is killed (SIGKILL), which makes the postmaster restart every
# process and drop that memory: the heap loses the rows, the sidecar (in the
# kernel's page cache) keeps them.  Checks that:
#  - the server logs the removal of those entries, and hannoy_verify finds
#    nothing (no entry for a slot the heap does not hold);
#  - an unbounded ordered index scan returns exactly the seq-scan rows, and
#    rows inserted afterwards into the very slots the lost rows had (shown
#    with ctid) are found by their own vectors;
#  - the same after two crashes in a row, the index untouched in between
#    while other tables are written (the removal does not depend on which
#    run of the server looks first);
#  - a lost row's slot taken by a heap-only tuple (a HOT update, which adds
#    no index entry) before anything opened the index, and a lost row
#    without a vector, leave no entry either;
#  - a partial index still flushes WAL before its sidecar (a lost row's slot
#    could be taken by a row its predicate excludes): its rows survive the
#    crash, and hannoy_verify finds nothing.
# Only hannoy_verify and the log line see a stale entry here: a scan skips a
# slot the heap does not hold, and an insert into the same slot replaces it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $node = hannoy_node('lost_wal',
	conf => "autovacuum = off\ncheckpoint_timeout = '1h'\nmax_wal_size = '1GB'\n"
	  . "wal_writer_delay = '10s'\nrestart_after_crash = on");

my $dims = 8;
my $vectors = seeded_vectors(2000, $dims, 75);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 5)->[0]) . "'::real[]";

$node->safe_psql('postgres',
	'CREATE TABLE items (id int PRIMARY KEY, v real[]); '
	  . 'ALTER TABLE items ADD COLUMN note text; '
	  . 'CREATE TABLE part (id int PRIMARY KEY, v real[]); '
	  . 'CREATE TABLE other (id int, v real[])');

sub insert_rows
{
	my ($table, $from, $to, $async) = @_;
	my $sql = $async ? 'SET synchronous_commit = off; ' : '';
	# one transaction a row, as applications insert
	$sql .= "INSERT INTO $table (id, v) VALUES ($_, '" . vector_literal($vectors->[$_]) . "'); "
	  for $from .. $to;
	$node->safe_psql('postgres', $sql);
}

insert_rows('items', 0, 299);
insert_rows('part', 0, 299);
$node->safe_psql('postgres',
	'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops); '
	  . 'CREATE INDEX part_v ON part USING hannoy (v real_l2_ops) WHERE id % 2 = 0; '
	  . 'CHECKPOINT');

# Stops the WAL writer, runs $work (inserts with synchronous_commit = off),
# then kills the WAL writer, which restarts the server and drops the WAL
# still in shared memory.  Returns once the server accepts connections.
sub crash_losing_wal
{
	my ($work) = @_;
	my $walwriter = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'");
	ok($walwriter =~ /^\d+$/, 'found the WAL writer');
	kill 'STOP', $walwriter;
	$work->();
	kill 'KILL', $walwriter;
	ok( wait_until(
			60,
			sub {
				my $r = $node->psql('postgres', 'SELECT 1', on_error_stop => 0);
				return $r == 0;
			}),
		'the server restarted after the crash');
}

# Checks that the index on $table answers exactly with the heap's rows and
# that hannoy_verify finds nothing.
sub consistent
{
	my ($table, $index, $label) = @_;
	my ($got) = scan_ids($node, $table, 'index', query => $query);
	my ($seq) = scan_ids($node, $table, 'seq');
	compare_id_sets($got, $seq, "$label: the index scan returns exactly the seq-scan rows");
	is(join("\n", @{ verify_problems($node, $index) }), '', "$label: hannoy_verify finds nothing");
}

my $log_offset = -s $node->logfile;
my $slots_before = $node->safe_psql('postgres', "SELECT max(ctid) FROM items");
my %lost_slots;
# the partial index first: its WAL flush before the sidecar would keep the later rows' WAL
crash_losing_wal(
	sub {
		insert_rows('part', 300, 339, 1);
		insert_rows('items', 300, 339, 1);
		# a row without a vector: an unindexed entry, noted too
		$node->safe_psql('postgres',
			'SET synchronous_commit = off; INSERT INTO items (id, v) VALUES (340, NULL)');
		%lost_slots = map { $_ => 1 } split /\n/,
		  $node->safe_psql('postgres', 'SELECT ctid FROM items WHERE id >= 300');
	});

is($node->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id >= 300'),
	'0', 'the crash lost the heap rows committed asynchronously');
# Before anything opens the index: a HOT update (no index entry) puts a heap-only tuple into a
# slot a lost row had
my $hot = $node->safe_psql('postgres',
	"UPDATE items SET note = 'hot' WHERE ctid = (SELECT max(ctid) FROM items) RETURNING ctid");
ok($lost_slots{$hot}, "a HOT update took the slot $hot of a lost row");
consistent('items', 'items_v', 'after the crash');
like(
	PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset),
	qr/hannoy index "items_v": removed \d+ entries whose heap rows a crash lost/,
	'the entries of the lost rows were removed');

# The partial index flushed WAL before its sidecar took the rows: their heap rows survived
ok($node->safe_psql('postgres', 'SELECT count(*) FROM part WHERE id >= 300') > 0,
	'the partial index flushed WAL first: its rows survived the crash');
my $part_sql = "SELECT id FROM part WHERE id % 2 = 0 ORDER BY v <-> $query";
like($node->safe_psql('postgres', "SET enable_seqscan = off; EXPLAIN (COSTS OFF) $part_sql"),
	qr/Index Scan using part_v on part/, 'the partial index is used');
is( $node->safe_psql('postgres', "SET enable_seqscan = off; SELECT count(*) FROM ($part_sql) s"),
	$node->safe_psql('postgres', 'SELECT count(*) FROM part WHERE id % 2 = 0'),
	'the partial index returns exactly the rows its predicate takes');
is(join("\n", @{ verify_problems($node, 'part_v') }), '',
	'the partial index: hannoy_verify finds nothing');

# New rows take the lost rows' slots; each finds itself
insert_rows('items', 1000, 1039);
my $reused = $node->safe_psql('postgres',
	"SELECT count(*) FROM items WHERE id >= 1000 AND ctid > '$slots_before'");
ok($reused > 0, "new rows took slots after the last surviving row, where the lost rows were ($reused)");
consistent('items', 'items_v', 'after new rows took the slots');
is( $node->safe_psql(
		'postgres', qq{SET enable_seqscan = off; SET hannoy.ef_search = 200;
		SELECT count(*) FROM items i WHERE id >= 1000 AND id NOT IN
		  (SELECT id FROM items ORDER BY v <-> i.v LIMIT 10)}),
	'0',
	'every new row is among the 10 nearest of its own vector');

# Two crashes in a row: the index is not opened in between, while other tables are written
$log_offset = -s $node->logfile;
crash_losing_wal(sub { insert_rows('items', 400, 439, 1); });
$node->safe_psql('postgres',
	'INSERT INTO other SELECT g, ARRAY[g, g]::real[] FROM generate_series(1, 20000) g');
crash_losing_wal(sub { insert_rows('other', 0, 9, 1); });
is($node->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id >= 400 AND id < 1000'),
	'0', 'the first crash lost its rows');
consistent('items', 'items_v', 'after two crashes');
like(
	PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset),
	qr/hannoy index "items_v": removed \d+ entries whose heap rows a crash lost/,
	'the entries of the rows the first crash lost were removed after the second');

# VACUUM and a restart change nothing
$node->safe_psql('postgres', 'VACUUM items');
$node->restart;
consistent('items', 'items_v', 'after VACUUM and a restart');

done_testing();
