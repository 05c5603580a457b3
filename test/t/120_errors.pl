# Nothing leaks when queries fail (DESIGN.md "Nothing leaks on error"): amendscan is not called
# after an
# ERROR, so LMDB read transactions must be released by the scan's memory
# context callback, and inserts of failed (sub)transactions must leave the
# sidecar untouched.  One session, kept open, errors 300 times in the middle
# of index scans (in PL/pgSQL exception blocks and in aborted transactions
# with an open cursor) and 300 times in inserts; while it is still connected,
# LMDB's reader table shows no snapshot held, and the sidecar's size and
# pages are unchanged.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('errors');
$node->safe_psql('postgres', q{
	CREATE TABLE t (id int, v real[]);
	INSERT INTO t SELECT i, ARRAY[i % 17, i % 13, i % 11, i % 7]::real[] FROM generate_series(1, 2000) i;
	CREATE INDEX t_v ON t USING hannoy (v);});
my $dir = $node->data_dir . '/hannoy/' . (sidecar_dirs($node))[0];

# Snapshots LMDB readers hold now (reader slots with a transaction id).
sub active_readers
{
	my ($out, $err);
	# mdb_stat -r exits 1 even when it succeeds: judge by what it prints
	IPC::Run::run([ 'mdb_stat', '-r', $dir ], '>', \$out, '2>', \$err);
	die "mdb_stat failed: $err" unless $out =~ /Reader Table Status/;
	return scalar(grep { /^\s*\d+\s+\S+\s+\d+\s*$/ } split /\n/, $out);
}

sub sidecar
{
	return $node->safe_psql('postgres',
		"SELECT hannoy_index_size('t_v') || ' bytes, ' || lmdb_pages || ' pages' FROM hannoy_index_stats('t_v')");
}

my $before = sidecar();
my $session = $node->background_psql('postgres', on_error_stop => 0);
$session->query_safe('SET enable_seqscan = off');
like($session->query_safe(
		"EXPLAIN (COSTS OFF) SELECT 1 / (id - 1000) FROM t ORDER BY v <-> '{1,2,3,4}'"),
	qr/Index Scan using t_v/, 'the failing query is an index scan');

# 300 scans that fail after returning some rows, caught in PL/pgSQL
$session->query_safe(q{
	DO $$
	DECLARE failures int := 0;
	BEGIN
	  FOR i IN 1 .. 300 LOOP
	    BEGIN
	      PERFORM sum(x) FROM (SELECT 1 / (id - 1000) AS x FROM t ORDER BY v <-> ARRAY[i % 17, 1, 2, 3]::real[]) s;
	    EXCEPTION WHEN division_by_zero THEN failures := failures + 1;
	    END;
	  END LOOP;
	  IF failures <> 300 THEN RAISE 'expected 300 failures, got %', failures; END IF;
	END $$;});
is(active_readers(), 0, 'after 300 scans failing inside PL/pgSQL no LMDB snapshot is held');

# aborted transactions with an open cursor on the index
for (1 .. 20)
{
	# one round trip: the error's text would otherwise reach a later query
	$session->query(q{BEGIN; DECLARE c CURSOR FOR SELECT id FROM t ORDER BY v <-> '{1,1,1,1}';
		FETCH 5 FROM c; SELECT 1 / 0; ROLLBACK;});
}
is(active_readers(), 0, 'after aborted transactions with open cursors no LMDB snapshot is held');

# 300 failing inserts: bad input, and rows whose subtransaction aborts
$session->query(q{
	DO $$
	BEGIN
	  FOR i IN 1 .. 150 LOOP
	    BEGIN
	      INSERT INTO t VALUES (5000 + i, '{1,2}');
	    EXCEPTION WHEN data_exception THEN NULL;
	    END;
	    BEGIN
	      INSERT INTO t VALUES (6000 + i, ARRAY[i, i, i, i]::real[]);
	      RAISE EXCEPTION 'roll back the insert';
	    EXCEPTION WHEN raise_exception THEN NULL;
	    END;
	  END LOOP;
	END $$;});
is(active_readers(), 0, 'after failing inserts no LMDB snapshot is held');
is(sidecar(), $before, 'the sidecar did not grow: no rolled-back row reached it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'), '2000', 'no row was added');

my ($idx) = scan_ids($node, 't', 'index', query => "'{1,2,3,4}'");
my ($seq) = scan_ids($node, 't', 'seq');
compare_id_sets($idx, $seq, 'the index still equals a sequential scan');

$session->quit;
$node->stop;
done_testing();
