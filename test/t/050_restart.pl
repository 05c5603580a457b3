# A hannoy index survives restarts: a clean one (fast shutdown) and an
# immediate one (a crash: no shutdown checkpoint, WAL replay at start).
#
# Proves that after each restart, for an index that was built and then given
# committed inserts (and rows that were rolled back):
#  - the index is still used and answers without error;
#  - an unbounded ordered index scan returns exactly the rows a sequential
#    scan returns (DESIGN.md "Complete scans");
#  - every committed row's own vector finds it among the first 10 rows;
#  - rows never committed are never returned, including the rows of a
#    transaction that was still open (and had flushed its rows to the
#    sidecar through a scan) when the server crashed;
#  - a transaction prepared before the crash can be committed, or rolled
#    back, after it, with its rows found, or never returned, accordingly;
#  - an index created just before the crash (its metapage only in WAL) is
#    usable after it;
#  - the index takes new inserts after the crash.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $DIMS = 16;
my $node = hannoy_node('restart', conf => 'max_prepared_transactions = 5');
my $dir = PostgreSQL::Test::Utils::tempdir;

# src: vectors of rows that get committed (ids 1..8000); gone: vectors of
# rows that never do (ids 900001..900800).
my $vecs = seeded_vectors(8800, $DIMS, 50);
my $i = 0;
my $src_copy = write_copy_file($dir, 'src.copy',
	[ map { [ ++$i, vector_literal($_) ] } @{$vecs}[ 0 .. 7999 ] ]);
$i = 900_000;
my $gone_copy = write_copy_file($dir, 'gone.copy',
	[ map { [ ++$i, vector_literal($_) ] } @{$vecs}[ 8000 .. 8799 ] ]);
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE src (id int PRIMARY KEY, v real[] NOT NULL);
	COPY src FROM '$src_copy';
	CREATE TABLE gone (id int PRIMARY KEY, v real[] NOT NULL);
	COPY gone FROM '$gone_copy';
	CREATE TABLE t (id int PRIMARY KEY, v real[] NOT NULL);
	INSERT INTO t SELECT * FROM src WHERE id <= 3000;
	CREATE INDEX t_v ON t USING hannoy (v);
});
my $Q = q{'} . vector_literal(seeded_vectors(1, $DIMS, 51)->[0]) . q{'::real[]};

# Returns a script of one INSERT per row (each its own transaction) of the
# src rows $from..$to into t.
sub insert_script
{
	my ($from, $to) = @_;
	return join('', map { "INSERT INTO t SELECT * FROM src WHERE id = $_;\n" } $from .. $to);
}

# Runs SQL that must succeed; reports a failure (with psql's messages)
# instead of ending the file, so that the later checks still run.
sub run_ok
{
	my ($sql, $name, %o) = @_;
	my ($ret, $out, $err) =
	  $node->psql('postgres', $sql, on_error_stop => ($o{keep_going} ? 0 : 1));
	ok($ret == 0 && $err eq '', $name) or diag("psql exited with $ret: $err");
	return $out;
}

# The checks after each restart: $count committed rows, each found by its
# own vector, no gone row ever returned, an unbounded index scan equal to a
# sequential scan.
sub check_table
{
	my ($table, $count, $what) = @_;

	is($node->safe_psql('postgres', "SELECT count(*) FROM $table"), $count,
		"$what: $count committed rows");
	my ($misses) = self_lookup_misses($node, $table);
	is(scalar(@$misses), 0, "$what: every committed row is among the 10 nearest to its own vector")
	  or diag('not found: ' . join(',', @{$misses}[ 0 .. ($#$misses < 19 ? $#$misses : 19) ]));
	my $found = rows_found_by_vectors($node, $table, 'gone');
	is(scalar(@$found), 0, "$what: no row that was never committed is returned")
	  or diag('returned: ' . join(',', @$found[ 0 .. ($#$found < 19 ? $#$found : 19) ]));
	my ($by_index) = scan_ids($node, $table, 'index', query => $Q);
	my ($by_seq) = scan_ids($node, $table, 'seq');
	compare_id_sets($by_index, $by_seq, "$what: an unbounded index scan returns the seq scan's rows");
}

# Inserts after the build: a transaction of 1,000 rows, 500 rows one per
# transaction, a rolled-back transaction and a rolled-back savepoint.
run_ok('INSERT INTO t SELECT * FROM src WHERE id BETWEEN 3001 AND 4000',
	'1,000 rows in one transaction');
run_ok(insert_script(4001, 4500), '500 rows one per transaction', keep_going => 1);
run_ok(
	q{
	BEGIN; INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900001 AND 900100; ROLLBACK;
	BEGIN;
	INSERT INTO t SELECT * FROM src WHERE id BETWEEN 4501 AND 4600;
	SAVEPOINT s;
	INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900101 AND 900200;
	ROLLBACK TO SAVEPOINT s;
	COMMIT;
}, 'a rolled-back transaction and a rolled-back savepoint');

check_table('t', 4600, 'before any restart');

############################################################################
# A clean restart.
############################################################################

$node->restart;
check_table('t', 4600, 'after a clean restart');

############################################################################
# An immediate (crash) restart.
############################################################################

run_ok('INSERT INTO t SELECT * FROM src WHERE id BETWEEN 4601 AND 5600',
	'1,000 more rows in one transaction');
run_ok(insert_script(5601, 5800), '200 more rows one per transaction', keep_going => 1);

# Two prepared transactions, to be finished after the crash.
run_ok(
	q{BEGIN; INSERT INTO t SELECT * FROM src WHERE id BETWEEN 5801 AND 6000;
	  PREPARE TRANSACTION 'to_commit';}, 'PREPARE TRANSACTION of 200 rows');
run_ok(
	q{BEGIN; INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900201 AND 900400;
	  PREPARE TRANSACTION 'to_abort';}, 'PREPARE TRANSACTION of 200 rows to roll back');

# An index created just before the crash: no checkpoint covers it.
run_ok(
	q{CREATE TABLE late (id int PRIMARY KEY, v real[] NOT NULL);
	  INSERT INTO late SELECT * FROM src WHERE id <= 1500;
	  CREATE INDEX late_v ON late USING hannoy (v);
	  INSERT INTO late SELECT * FROM src WHERE id BETWEEN 1501 AND 2000;},
	'an index created and given inserts just before the crash');

# A transaction still open at the crash, whose rows a scan has flushed to
# the sidecar.
my $open = $node->background_psql('postgres', on_error_stop => 0);
$open->query_safe('BEGIN');
$open->query_safe('INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900401 AND 900800');
is( $open->query_safe(
		"SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> $Q LIMIT 10000) s WHERE id > 900000"),
	400,
	'the open transaction sees its 400 rows through the index');

$node->stop('immediate');
# psql notices that its server went away; that is all it can do now.
eval { $open->quit; };
$node->start;

is($node->safe_psql('postgres', 'SELECT gid FROM pg_prepared_xacts ORDER BY 1'),
	"to_abort\nto_commit", 'both prepared transactions survive the crash');
check_table('t', 5800, 'after a crash, before COMMIT PREPARED');

run_ok("COMMIT PREPARED 'to_commit'", 'COMMIT PREPARED after the crash');
run_ok("ROLLBACK PREPARED 'to_abort'", 'ROLLBACK PREPARED after the crash');
check_table('t', 6000, 'after a crash and COMMIT PREPARED');
check_table('late', 2000, 'an index created just before the crash');

# The index takes inserts after the crash, and survives another crash.
run_ok('INSERT INTO t SELECT * FROM src WHERE id BETWEEN 6001 AND 7000',
	'1,000 rows in one transaction after the crash');
run_ok(insert_script(7001, 7200), '200 rows one per transaction after the crash',
	keep_going => 1);
$node->stop('immediate');
$node->start;
check_table('t', 7200, 'after a second crash');

my $log = slurp_file($node->logfile);
my @bad = grep { /\b(WARNING|PANIC):|cannot be used/ } split /\n/, $log;
is(scalar(@bad), 0, 'the server logged no WARNING or PANIC, and no unusable index')
  or diag(join("\n", @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ]));

$node->stop;
done_testing();
