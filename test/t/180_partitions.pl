# Hundreds to thousands of hannoy indexes in one query (DESIGN.md "Invariants:
# one open per process"): a table of 1,000 small partitions with a
# partitioned hannoy index answers ORDER BY v <-> q LIMIT 10 through a Merge
# Append of 1,000 index scans, with PostgreSQL's default
# max_files_per_process (1000) and the postmaster limited to 1,024 file
# descriptors (the usual soft limit).  Each scan keeps its results in memory
# and holds its sidecar only while it searches, so the backend never needs
# more than a bounded number of environments open at once; every answer is
# the exact top 10.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $partitions = 1000;
my $fd_limit = 1024;

# The postmaster inherits this process's limits: lower them to 1,024
# descriptors (soft and hard) before the node starts.
system('prlimit', '--pid', $$, "--nofile=$fd_limit:$fd_limit") == 0
  or BAIL_OUT('prlimit could not lower the descriptor limit');

# A query over 1,000 partitions locks 2,000 relations; the lock table must
# hold them (max_locks_per_transaction is about shared memory, not files).
my $node = hannoy_node('partitions',
	conf => "max_locks_per_transaction = 1024\nautovacuum = off");

my $pid = $node->safe_psql('postgres', 'SELECT pg_backend_pid()');
my $limits = slurp_file("/proc/$pid/limits");
like($limits, qr/^Max open files\s+$fd_limit\s+$fd_limit\b/m,
	"a backend runs with a $fd_limit-descriptor limit");
is($node->safe_psql('postgres', 'SHOW max_files_per_process'), '1000',
	'max_files_per_process is the default');

# 1,000 hash partitions of about 10 rows each (5 to 20), 8-d vectors.
my $t0 = now_s();
$node->safe_psql('postgres', qq{
	CREATE TABLE p (id int, v real[]) PARTITION BY HASH (id);
	DO \$\$
	BEGIN
		FOR i IN 0 .. $partitions - 1 LOOP
			EXECUTE format('CREATE TABLE p_%s PARTITION OF p FOR VALUES WITH (modulus $partitions, remainder %s)', i, i);
		END LOOP;
	END \$\$;
	SELECT setseed(0.18);
	INSERT INTO p SELECT i, ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, 8) WHERE i > 0)
	  FROM generate_series(1, 10 * $partitions) i;
	CREATE INDEX p_v ON p USING hannoy (v);});
note('1,000 partitions loaded and indexed in ' . elapsed_since($t0) . ' s');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_inherits WHERE inhparent = 'p_v'::regclass"),
	$partitions, "the partitioned index has $partitions partitions");
is($node->safe_psql('postgres',
		"SELECT min(n) >= 1 FROM (SELECT count(*) n FROM p GROUP BY tableoid) s"),
	't', 'every partition has rows');
is(scalar(sidecar_dirs($node)), $partitions, 'one sidecar per partition');

my $force = 'SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off;'
  . ' SET hannoy.ef_search = 1000;';
my $exact = 'SET enable_indexscan = off; SET enable_bitmapscan = off;';

my $queries = seeded_vectors(4, 8, 180);
my $plan = $node->safe_psql('postgres',
	"$force EXPLAIN (COSTS OFF) SELECT id FROM p ORDER BY v <-> '"
	  . vector_literal($queries->[0]) . "' LIMIT 10");
like($plan, qr/Merge Append/, 'the plan is a Merge Append');
my $index_scans = () = $plan =~ /Index Scan using \S+ on p_\d+/g;
is($index_scans, $partitions, "of $partitions index scans");

for my $i (0 .. $#$queries)
{
	my $q = "'" . vector_literal($queries->[$i]) . "'";
	my $sql = "SELECT id FROM p ORDER BY v <-> $q LIMIT 10";
	like($node->safe_psql('postgres', "$force EXPLAIN (COSTS OFF) $sql"),
		qr/Limit\s+->\s+Merge Append.*Index Scan using/s, "query $i: a Merge Append of index scans");
	$t0 = now_s();
	my ($ret, $got, $err) = $node->psql('postgres', "$force $sql");
	note("query $i through the index in " . elapsed_since($t0) . ' s');
	is($ret, 0, "query $i: the index scans succeed") or diag($err);
	my $want = $node->safe_psql('postgres', "$exact $sql");
	is(join(',', sort { $a <=> $b } split /\n/, $got), join(',', sort { $a <=> $b } split /\n/, $want),
		"query $i: the exact top 10");
}

# The same in one session that keeps its environments between queries, and
# with a cursor that reads the scans a few rows at a time.
my ($ret, $out, $err) = $node->psql('postgres', qq{
	$force
	BEGIN;
	DECLARE c CURSOR FOR SELECT id FROM p ORDER BY v <-> '@{[vector_literal($queries->[1])]}' LIMIT 40;
	FETCH 15 FROM c;
	SELECT count(*) FROM p;
	FETCH 25 FROM c;
	COMMIT;});
is($ret, 0, 'a cursor over the 1,000 scans reads its rows in two fetches') or diag($err);
my @rows = grep { /^\d+$/ } split /\n/, $out;
my $want = $node->safe_psql('postgres',
	"$exact SELECT id FROM p ORDER BY v <-> '@{[vector_literal($queries->[1])]}' LIMIT 40");
my @want = split /\n/, $want;
is(scalar(@rows), 40 + 1, 'the cursor returned 40 rows (and the count)');
is_deeply([ sort { $a <=> $b } @rows[ 0 .. 14, 16 .. 40 ] ], [ sort { $a <=> $b } @want ],
	'the cursor returned the exact 40 nearest rows');

is_deeply(log_problems($node), [], 'no warnings or errors in the server log');
$node->stop;
done_testing();
