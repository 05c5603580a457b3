# hannoy_verify compares the sidecar with the heap (DESIGN.md "Inspection").
#
# A sidecar that lags behind its heap is what DESIGN.md's "WAL before sidecar" and "Durable removal"
# exist to prevent.
# This test makes one on purpose, to show that the verifier catches it: it
# keeps a copy of an index's sidecar (with the server stopped), then deletes
# rows and VACUUMs (the heap frees their line pointers), inserts rows that
# reuse some of those TIDs and rows past the old end of the table, and puts
# the old copy back (same build, system and timeline, so the "Never silently wrong" checks accept it).
# hannoy_verify must then report exactly
#  - "heap tuple missing" for each freed TID no new row took,
#  - "vector differs from heap tuple" for each TID a new row took,
#  - "heap tuple not indexed" for each new row at a TID the copy lacks,
# each with its TID, and nothing after REINDEX.
#
# Then, while pgbench clients insert and delete rows (reusing TIDs) and
# VACUUM runs in a loop, repeated hannoy_verify calls on a healthy index
# report nothing: rows that change while the check runs (the test-only
# setting hannoy.test_verify_delay makes that likely) are looked at again,
# never reported.
use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('verify_heap', conf => "autovacuum = off\nmax_connections = 30");
my $dir = PostgreSQL::Test::Utils::tempdir;

############################################################################
# A sidecar put back from before a DELETE, VACUUM and new inserts.
############################################################################
$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v real[]);
	INSERT INTO t SELECT i, ARRAY[i % 17, i % 13, i % 11, i]::real[] FROM generate_series(1, 1000) i;
	INSERT INTO t VALUES (1001, NULL);
	CREATE INDEX t_v ON t USING hannoy (v);});
is_deeply(verify_problems($node, 't_v'), [], 'the fresh index verifies clean');

my $sidecar = $node->safe_psql('postgres', q{
	SELECT format('%s_%s_%s', d.dattablespace, d.oid, pg_relation_filenode('t_v'))
	  FROM pg_database d WHERE d.datname = current_database()});
my $live = $node->data_dir . "/hannoy/$sidecar";
$node->stop;
system('cp', '-a', $live, "$dir/saved") == 0 or die "cannot copy $live";
$node->start;

# every row's TID as the copy knows it
$node->safe_psql('postgres', 'CREATE TABLE before AS SELECT id, ctid AS tid FROM t');
# 30 rows after the last one (no line pointer is free yet), then 100 rows
# deleted and their line pointers freed, then 40 rows into freed ones
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT 3000 + i, ARRAY[200 + i, 0, 0, 0]::real[] FROM generate_series(1, 30) i});
$node->safe_psql('postgres', 'DELETE FROM t WHERE id % 10 = 0 AND id <= 1000');
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP ON) t');
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT 2000 + i, ARRAY[100 + i, 0, 0, 0]::real[] FROM generate_series(1, 40) i});
is_deeply(verify_problems($node, 't_v'), [], 'the index itself verifies clean after VACUUM and inserts');

my %expect;
$expect{missing} = [ split /\n/, $node->safe_psql('postgres', q{
	SELECT b.tid FROM before b
	 WHERE b.id % 10 = 0 AND b.id <= 1000 AND NOT EXISTS (SELECT 1 FROM t WHERE t.ctid = b.tid)
	 ORDER BY b.tid}) ];
$expect{differs} = [ split /\n/, $node->safe_psql('postgres', q{
	SELECT t.ctid FROM t JOIN before b ON b.tid = t.ctid WHERE t.id > 2000 ORDER BY t.ctid}) ];
$expect{unindexed} = [ split /\n/, $node->safe_psql('postgres', q{
	SELECT t.ctid FROM t WHERE t.id > 2000 AND NOT EXISTS (SELECT 1 FROM before b WHERE b.tid = t.ctid)
	 ORDER BY t.ctid}) ];
note sprintf('expected: %d missing, %d differing, %d not indexed',
	map { scalar(@{ $expect{$_} }) } qw(missing differs unindexed));
cmp_ok(scalar(@{ $expect{$_} }), '>', 0, "the scenario has TIDs that should be reported as $_")
  for qw(missing differs unindexed);

$node->stop;
system('rm', '-rf', $live) == 0 or die "cannot remove $live";
system('cp', '-a', "$dir/saved", $live) == 0 or die "cannot restore $live";
$node->start;

# the TIDs hannoy_verify reports for one kind of problem
sub reported
{
	my ($kind) = @_;
	return [ split /\n/, $node->safe_psql('postgres', qq{
		SELECT substring(detail FROM '^TID (\\(\\d+,\\d+\\))')::tid AS tid
		  FROM hannoy_verify('t_v') WHERE kind = '$kind' ORDER BY 1}) ];
}

is_deeply(reported('heap tuple missing'), $expect{missing},
	'each freed TID the old sidecar still maps is reported as a missing heap tuple');
is_deeply(reported('vector differs from heap tuple'), $expect{differs},
	'each TID a new row took is reported as a differing vector');
is_deeply(reported('heap tuple not indexed'), $expect{unindexed},
	'each new row at a TID the old sidecar lacks is reported as not indexed');
my $kinds = $node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT kind, ', ' ORDER BY kind) FROM hannoy_verify('t_v')});
is($kinds, 'heap tuple missing, heap tuple not indexed, vector differs from heap tuple',
	'and nothing else is reported');
like($node->safe_psql('postgres', q{
	SELECT detail FROM hannoy_verify('t_v') WHERE kind = 'vector differs from heap tuple'
	 ORDER BY item LIMIT 1}),
	qr/^TID \(\d+,\d+\): element 1 is \d+ in the heap tuple, \d+ in the sidecar$/,
	'a differing vector names the first element that differs');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM hannoy_verify('t_v')
	 WHERE kind IN ('heap tuple missing', 'vector differs from heap tuple') AND item IS NULL}),
	'0', 'problems about stored rows name their item');

$node->safe_psql('postgres', 'REINDEX INDEX t_v');
is_deeply(verify_problems($node, 't_v'), [], 'after REINDEX the index verifies clean');

############################################################################
# No false alarm while rows change under the check.
############################################################################
my $SECONDS = 15;
# the churn goes on up to twice as long while no row has changed under a check yet
my $CHURN = 2 * $SECONDS;
$node->safe_psql('postgres', q{
	CREATE TABLE churn (id bigserial PRIMARY KEY, v real[]);
	INSERT INTO churn (v) SELECT ARRAY[random(), random(), random(), random()]::real[]
	  FROM generate_series(1, 1500);
	CREATE INDEX churn_v ON churn USING hannoy (v);});
my $script = "$dir/churn.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{\set r random(1, 100)
\if :r <= 45
INSERT INTO churn (v) SELECT ARRAY[random(), random(), random(), random()]::real[];
\elif :r <= 50
INSERT INTO churn (v) VALUES (NULL);
\else
DELETE FROM churn WHERE id = (SELECT id FROM churn
                               WHERE id >= (SELECT (max(id) * random())::bigint FROM churn)
                               ORDER BY id LIMIT 1);
\endif
});
my ($bout, $berr) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '2', '-j', '2', '-R', '400', '-T', $CHURN, '-f', $script,
		$node->connstr('postgres')
	],
	'>', \$bout, '2>', \$berr, IPC::Run::timeout($CHURN + 120));
my $vacuums = "$dir/vacuums.sql";
PostgreSQL::Test::Utils::append_to_file($vacuums,
	join('', map { "VACUUM (INDEX_CLEANUP ON) churn;\nSELECT pg_sleep(0.05);\n" } 1 .. 10 * $CHURN));
my ($vh, $vout, $verr) = run_psql_script($node, $vacuums);

# hannoy.test_verify_delay widens the time between reading a batch of rows
# from the sidecar and reading their heap tuples, so that VACUUM removes
# rows and inserts take their TIDs in between; the DEBUG lines show the
# check noticed and looked again.  pgbench's rate is limited: each check
# holds back VACUUM's horizon, and an unlimited churn would pile up dead
# rows faster than the checks get through them.
my $HEAP_KINDS = q{('heap tuple missing', 'vector differs from heap tuple', 'heap tuple not indexed')};
my ($checks, $problems, $rechecks) = (0, 0, 0);
my (@seen, %graph);
my $t0 = now_s();
while (now_s() - $t0 < $SECONDS || ($rechecks == 0 && now_s() - $t0 < $CHURN - 2))
{
	my ($ret, $out, $err) = $node->psql('postgres', q{
		SET hannoy.test_verify_delay = 150; SET client_min_messages = debug1;
		SELECT kind || ': ' || detail FROM hannoy_verify('churn_v')},
		on_error_stop => 1);
	die "hannoy_verify failed: $err" if $ret != 0;
	$checks++;
	$rechecks += () = $err =~ /DEBUG:  hannoy_verify: .*(no longer holds|changed, looking again)/g;
	for my $line (split /\n/, $out)
	{
		my ($kind) = $line =~ /^([^:]+):/;
		if ($HEAP_KINDS =~ /'\Q$kind\E'/)
		{
			$problems++;
			push @seen, $line if @seen < 5;
		}
		else
		{
			$graph{$kind}++;
		}
	}
}
my $bench_ok = eval { $bench->finish };
ok($bench_ok, 'pgbench succeeded') or diag("pgbench: $berr");
ok($vh->finish, 'the VACUUM loop succeeded') or diag("psql: $$verr");
my ($txns) = $bout =~ /number of transactions actually processed: (\d+)/;
note "hannoy_verify ran $checks times alongside " . ($txns // '?')
  . " pgbench transactions and looked again at $rechecks rows that changed under it";
cmp_ok($checks, '>=', 3, 'hannoy_verify ran several times during the churn');
cmp_ok($rechecks, '>', 0, 'rows changed under the check, and it looked at them again');
is($problems, 0, 'hannoy_verify never reported a heap problem on the healthy index while rows changed')
  or diag(join("\n", @seen));
is($node->safe_psql('postgres', "SELECT count(*) FROM hannoy_verify('churn_v') WHERE kind IN $HEAP_KINDS"),
	'0', 'and reports no heap problem afterwards');
# the walk's own findings about the graph (unreachable nodes, links) are
# another subject: noted, not tested here
note "graph problems the walk reported during the churn: "
  . join(', ', map { "$_ x$graph{$_}" } sort keys %graph) if %graph;

$node->stop;
done_testing();
