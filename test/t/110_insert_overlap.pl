# Inserting backends do not serialise for the whole neighbour search
# (DESIGN.md "Insert", "Short write transactions"): the search runs in an LMDB read transaction, and
# only linking the new node takes the writer lock.  With the test-only
# setting hannoy.test_search_delay every search pauses 1.5 s; two sessions
# committing an insert at the same moment finish in well under the 3 s
# they would need one after the other, and both rows are indexed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

use HannoyTestUtil;

my $node = hannoy_node('overlap');
$node->safe_psql('postgres', q{
	CREATE TABLE t (id int, v real[]);
	INSERT INTO t SELECT i, ARRAY[i % 17, i % 13, i % 11]::real[] FROM generate_series(1, 2000) i;
	CREATE INDEX t_v ON t USING hannoy (v);});

my $delay_ms = 1500;
my @sessions;
my $start = time();
for my $id (10001, 10002)
{
	my ($out, $err) = ('', '');
	my $sql = "SET hannoy.test_search_delay = $delay_ms; "
	  . "INSERT INTO t VALUES ($id, '{$id,1,1}');";
	push @sessions,
	  IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err);
}
my $ok = 1;
$ok &&= $_->finish for @sessions;
my $elapsed = time() - $start;
ok($ok, 'both inserting sessions succeed');
note(sprintf('two inserts, each pausing %.1f s in its search, took %.2f s', $delay_ms / 1000, $elapsed));
cmp_ok($elapsed, '>=', $delay_ms / 1000, 'the pause really happened');
cmp_ok($elapsed, '<', 2 * $delay_ms / 1000, 'the two searches overlapped instead of running one after the other');

for my $id (10001, 10002)
{
	is($node->safe_psql('postgres',
			"SET enable_seqscan = off; SELECT id FROM t ORDER BY v <-> '{$id,1,1}' LIMIT 1"),
		$id, "row $id is found through the index");
}
$node->stop;
done_testing();
