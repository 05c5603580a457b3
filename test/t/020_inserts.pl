# Inserts after CREATE INDEX (DESIGN.md "Insert").
#
# Proves, for an index built on 2,000 rows and then given 3,000 more, and for
# an index built on an EMPTY table and then filled only by inserts (12,300
# rows, one transaction larger than the per-backend insert queue's bound):
#  - rows inserted in one transaction, one per transaction, around a rolled
#    back savepoint, through PREPARE TRANSACTION / COMMIT PREPARED, and by two
#    sessions inserting at the same time are all in the graph: every
#    committed row's own vector finds it among the first 10 rows of
#    ORDER BY v <-> own_vector;
#  - a transaction's own scans see its queued rows before it commits;
#  - rows of a rolled-back transaction, a rolled-back savepoint (flushed to
#    the sidecar by a scan or still queued) and ROLLBACK PREPARED never
#    appear, even when queried with their own vectors;
#  - rows of a prepared but not yet committed transaction are invisible;
#  - an unbounded ordered index scan returns exactly the rows a sequential
#    scan returns (no row lost, none twice, none extra: DESIGN.md "Complete scans");
#  - nothing of this logs a WARNING or an ERROR.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $DIMS = 16;
my $SRC_ROWS = 12_300;    # vectors of committed rows, ids 1..12300
my $GONE_ROWS = 1_000;    # vectors of rows never committed, ids 900001..901000

my $node = hannoy_node('inserts', conf => 'max_prepared_transactions = 5');
my $dir = PostgreSQL::Test::Utils::tempdir;

my $vecs = seeded_vectors($SRC_ROWS + $GONE_ROWS, $DIMS, 20);
my $i = 0;
my $src_copy = write_copy_file($dir, 'src.copy',
	[ map { [ ++$i, vector_literal($_) ] } @{$vecs}[ 0 .. $SRC_ROWS - 1 ] ]);
$i = 900_000;
my $gone_copy = write_copy_file($dir, 'gone.copy',
	[ map { [ ++$i, vector_literal($_) ] } @{$vecs}[ $SRC_ROWS .. $#$vecs ] ]);
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE src (id int PRIMARY KEY, v real[] NOT NULL);
	COPY src FROM '$src_copy';
	CREATE TABLE gone (id int PRIMARY KEY, v real[] NOT NULL);
	COPY gone FROM '$gone_copy';
});
# A query vector for the unbounded scans (not a row of any table).
my $Q = q{'} . vector_literal(seeded_vectors(1, $DIMS, 99)->[0]) . q{'::real[]};

# Returns a script of one INSERT per row (each its own transaction) of the
# src rows $from..$to into $table, or in transactions of $per rows.
sub insert_script
{
	my ($table, $from, $to, $per) = @_;
	my $sql = '';
	my $n = 0;

	for my $id ($from .. $to)
	{
		$sql .= "BEGIN;\n" if $per && $n % $per == 0;
		$sql .= "INSERT INTO $table SELECT * FROM src WHERE id = $id;\n";
		$n++;
		$sql .= "COMMIT;\n" if $per && ($n % $per == 0 || $id == $to);
	}
	return $sql;
}

# Runs two insert scripts in two sessions at the same time and checks that
# both succeeded.
sub insert_concurrently
{
	my ($name, $script_a, $script_b) = @_;
	(my $file = $name) =~ s/\W+/_/g;
	my $fa = "$dir/$file-a.sql";
	my $fb = "$dir/$file-b.sql";

	PostgreSQL::Test::Utils::append_to_file($fa, $script_a);
	PostgreSQL::Test::Utils::append_to_file($fb, $script_b);
	my $t0 = now_s();
	my ($ha, $outa, $erra) = run_psql_script($node, $fa, on_error_stop => 0);
	my ($hb, $outb, $errb) = run_psql_script($node, $fb, on_error_stop => 0);
	my $oka = $ha->finish;
	my $okb = $hb->finish;
	note "$name: two concurrent sessions done in " . elapsed_since($t0) . ' s';
	ok($oka, "$name: session A succeeded") or diag($$erra);
	ok($okb, "$name: session B succeeded") or diag($$errb);
	is($$erra . $$errb, '', "$name: no errors in the sessions");
}

# Runs SQL that must succeed and returns its output.  A failure is reported
# (with psql's messages) instead of ending the file, so that the later checks
# still run; keep_going => 1 also runs the statements after a failed one.
sub run_ok
{
	my ($sql, $name, %o) = @_;
	my ($ret, $out, $err) =
	  $node->psql('postgres', $sql, on_error_stop => ($o{keep_going} ? 0 : 1));
	ok($ret == 0 && $err eq '', $name) or diag("psql exited with $ret: $err");
	return $out;
}

# Runs the checks every scenario ends with on $table: $count committed rows
# (all of them src rows), each found by its own vector, no row of gone ever
# returned, and an unbounded index scan equal to a sequential scan.
sub check_table
{
	my ($table, $count, $what) = @_;
	my $t0 = now_s();

	is($node->safe_psql('postgres', "SELECT count(*) FROM $table"), $count,
		"$what: $count committed rows");
	is($node->safe_psql('postgres', "SELECT count(*) FROM $table WHERE id > 900000"), 0,
		"$what: no rolled-back row is visible");

	my ($misses, $plan) = self_lookup_misses($node, $table);
	is(scalar(@$misses), 0, "$what: every committed row is among the 10 nearest to its own vector")
	  or diag('not found: ' . join(',', @{$misses}[ 0 .. ($#$misses < 19 ? $#$misses : 19) ]));

	my $found = rows_found_by_vectors($node, $table, 'gone');
	is(scalar(@$found), 0, "$what: no rolled-back row is returned by its own vector")
	  or diag('returned: ' . join(',', @$found[ 0 .. ($#$found < 19 ? $#$found : 19) ]));

	my ($by_index) = scan_ids($node, $table, 'index', query => $Q);
	my ($by_seq) = scan_ids($node, $table, 'seq');
	compare_id_sets($by_index, $by_seq, "$what: an unbounded index scan returns the seq scan's rows");
	note "$what: checks took " . elapsed_since($t0) . ' s';
}

# Checks that a transaction's own scans see its queued rows: the rows of src
# $from..$to inserted earlier in the same transaction are found by their own
# vectors.  Returns the SQL to put inside the transaction.
sub own_rows_check_sql
{
	my ($table, $from, $to) = @_;
	return "SELECT count(*) FROM $table a WHERE a.id BETWEEN $from AND $to AND EXISTS "
	  . "(SELECT 1 FROM (SELECT b.id FROM $table b ORDER BY b.v <-> a.v LIMIT 10) s "
	  . "WHERE s.id = a.id);";
}

############################################################################
# 1. An index built on 2,000 rows, then 3,000 more inserted.
############################################################################

$node->safe_psql(
	'postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v real[] NOT NULL);
	INSERT INTO t SELECT * FROM src WHERE id <= 2000;
	CREATE INDEX t_v ON t USING hannoy (v);
});

my $t0 = now_s();

# 1,000 rows in one transaction; its own scans see them before COMMIT.
is( run_ok(
		'BEGIN; INSERT INTO t SELECT * FROM src WHERE id BETWEEN 2001 AND 3000; '
		  . own_rows_check_sql('t', 2001, 3000)
		  . ' COMMIT;',
		'built index: 1,000 rows inserted in one transaction'),
	1000,
	'built index: a transaction finds its 1,000 own inserted rows before COMMIT');

# 500 rows, one per transaction.
run_ok(insert_script('t', 3001, 3500), 'built index: 500 rows inserted one per transaction',
	keep_going => 1);

# A rolled-back transaction.
run_ok('BEGIN; INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900001 AND 900300; ROLLBACK;',
	'built index: a transaction of 300 rows rolled back');

# Savepoints: one rolled back after a scan flushed its rows to the sidecar
# (the scan must see them), one rolled back with its rows still queued.
is( run_ok(
		q{
	BEGIN;
	INSERT INTO t SELECT * FROM src WHERE id BETWEEN 3501 AND 3750;
	SAVEPOINT s1;
	INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900301 AND 900450;
} . own_rows_check_sql('t', 900301, 900450) . q{
	ROLLBACK TO SAVEPOINT s1;
	SAVEPOINT s2;
	INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900451 AND 900600;
	ROLLBACK TO SAVEPOINT s2;
	INSERT INTO t SELECT * FROM src WHERE id BETWEEN 3751 AND 4000;
	COMMIT;
}, 'built index: 500 rows around two rolled-back savepoints'),
	150,
	'built index: rows inserted inside a savepoint are visible to its scans');

# PREPARE TRANSACTION: invisible until COMMIT PREPARED; ROLLBACK PREPARED.
run_ok(
	q{BEGIN; INSERT INTO t SELECT * FROM src WHERE id BETWEEN 4001 AND 4250;
	  PREPARE TRANSACTION 'ins_commit';}, 'built index: PREPARE TRANSACTION of 250 rows');
run_ok(
	q{BEGIN; INSERT INTO t SELECT * FROM gone WHERE id BETWEEN 900601 AND 900800;
	  PREPARE TRANSACTION 'ins_abort';}, 'built index: PREPARE TRANSACTION of 200 more rows');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id BETWEEN 4001 AND 4250'),
	0, 'built index: rows of a prepared transaction are invisible');
my ($prep_misses) = self_lookup_misses($node, 't');
is(scalar(@$prep_misses), 0,
	'built index: rows committed before are found while two transactions are prepared');
run_ok("COMMIT PREPARED 'ins_commit'", 'built index: COMMIT PREPARED');
run_ok("ROLLBACK PREPARED 'ins_abort'", 'built index: ROLLBACK PREPARED');

# Two sessions inserting at the same time: one row per transaction in one,
# transactions of 25 rows in the other.
insert_concurrently('built index', insert_script('t', 4251, 4625),
	insert_script('t', 4626, 5000, 25));
note 'built index: inserts took ' . elapsed_since($t0) . ' s';

check_table('t', 5000, 'built index');

############################################################################
# 2. An index built on an EMPTY table, then filled only by inserts.
############################################################################

$node->safe_psql(
	'postgres', q{
	CREATE TABLE e (id int PRIMARY KEY, v real[] NOT NULL);
	CREATE INDEX e_v ON e USING hannoy (v);
});
is($node->safe_psql('postgres', "SELECT count(*) FROM (SELECT id FROM e ORDER BY v <-> $Q) s"),
	0, 'empty index: a scan of the empty index returns no row');

$t0 = now_s();

# The very first rows come from two sessions at once (the first insert
# records the dimension count in the metapage).
insert_concurrently('empty index', insert_script('e', 1, 300),
	insert_script('e', 301, 600, 50));

is( run_ok(
		'BEGIN; INSERT INTO e SELECT * FROM src WHERE id BETWEEN 601 AND 1600; '
		  . own_rows_check_sql('e', 601, 1600)
		  . ' COMMIT;',
		'empty index: 1,000 rows inserted in one transaction'),
	1000,
	'empty index: a transaction finds its 1,000 own inserted rows before COMMIT');

run_ok('BEGIN; INSERT INTO e SELECT * FROM gone WHERE id BETWEEN 900001 AND 900200; ROLLBACK;',
	'empty index: a transaction of 200 rows rolled back');
run_ok(
	q{
	BEGIN;
	INSERT INTO e SELECT * FROM src WHERE id BETWEEN 1601 AND 1700;
	SAVEPOINT s1;
	INSERT INTO e SELECT * FROM gone WHERE id BETWEEN 900201 AND 900400;
	ROLLBACK TO SAVEPOINT s1;
	INSERT INTO e SELECT * FROM src WHERE id BETWEEN 1701 AND 1800;
	COMMIT;
}, 'empty index: 200 rows around a rolled-back savepoint');

# One transaction of 10,500 rows: more than the insert queue holds
# (HANNOY_QUEUE_MAX_ROWS = 10,000), so part of it is applied before COMMIT.
run_ok('BEGIN; INSERT INTO e SELECT * FROM src WHERE id BETWEEN 1801 AND 12300; COMMIT;',
	'empty index: 10,500 rows inserted in one transaction');

# A prepared transaction on the formerly empty index.
run_ok(
	q{BEGIN; INSERT INTO e SELECT * FROM gone WHERE id BETWEEN 900401 AND 900600;
	  PREPARE TRANSACTION 'e_abort';}, 'empty index: PREPARE TRANSACTION of 200 rows');
run_ok("ROLLBACK PREPARED 'e_abort'", 'empty index: ROLLBACK PREPARED');
note 'empty index: inserts took ' . elapsed_since($t0) . ' s';

check_table('e', 12_300, 'empty index');

my $log = slurp_file($node->logfile);
my @bad = grep { /\b(WARNING|ERROR|FATAL|PANIC):/ } split /\n/, $log;
is(scalar(@bad), 0, 'the server logged no WARNING, ERROR, FATAL or PANIC')
  or diag(join("\n", @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ]));

$node->stop;
done_testing();
