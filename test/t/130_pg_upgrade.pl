# pg_upgrade (DESIGN.md "Lifecycle", "Never silently wrong"): an upgraded cluster's hannoy indexes
# are unusable until REINDEX, never silently wrong.
#
# pg_upgrade (15 to 15, default copy mode) keeps relfilenodes and database
# OIDs, and copies the relation files (so the metapages) but not the
# sidecar directory, which is not a relation file.  While it restores the
# schema, CREATE INDEX builds each index on an empty table, so the new
# cluster has a sidecar at the right place, but of another build (and
# another database system) than the metapage copied over it.  A sidecar
# that a user copies by hand from the old cluster matches the metapage's
# build, but was written by another database system.  Either way:
#  - the planner does not choose the index;
#  - a scan forced onto it fails with a HINT naming REINDEX;
#  - inserts and VACUUM go on with a WARNING;
#  - after REINDEX an unbounded index scan returns exactly the rows a
#    sequential scan returns, and the top 10 with hannoy.ef_search at least
#    the row count are the exact top 10;
#  - after hannoy_sweep() no sidecar is left that no index owns.
use strict;
use warnings;

use Cwd ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $ROWS = 800;
my $query = "'{0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8}'";

my $old = hannoy_node('old', conf => 'autovacuum = off');
$old->safe_psql('postgres', 'CREATE DATABASE app');
$old->safe_psql('app', 'CREATE EXTENSION hannoy');
for my $table ('items', 'copied')
{
	my $vecs = seeded_vectors($ROWS, 8, $table eq 'items' ? 3 : 4);
	my $values = join(',', map { sprintf("(%d, '%s')", $_ + 1, vector_literal($vecs->[$_])) } 0 .. $ROWS - 1);
	$old->safe_psql('app', "CREATE TABLE $table (id int, v real[]); INSERT INTO $table VALUES $values, (0, NULL);"
		  . " CREATE INDEX ${table}_v ON $table USING hannoy (v);");
}
is_deeply(verify_problems($old, 'items_v', db => 'app'), [], 'the old cluster\'s index verifies clean');

# sidecar directory names (tablespace_database_relfilenode) of the indexes
sub sidecar_of
{
	my ($node, $index) = @_;
	return $node->safe_psql('app', qq{
		SELECT format('%s_%s_%s', d.dattablespace, d.oid, pg_relation_filenode('$index'))
		  FROM pg_database d WHERE d.datname = current_database()});
}
my %old_dir = map { $_ => sidecar_of($old, $_) } qw(items_v copied_v);
$old->stop;

my $new = hannoy_node('new', create_extension => 0);
$new->stop;
my $bindir = $new->config_data('--bindir');

# pg_upgrade writes files into its working directory
my $workdir = PostgreSQL::Test::Utils::tempdir;
my $cwd = Cwd::getcwd();
chdir $workdir or die "cannot chdir to $workdir: $!";
command_ok(
	[
		'pg_upgrade', '--no-sync',
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-b', $bindir, '-B', $bindir,
		'-s', $new->host, '-p', $old->port, '-P', $new->port
	],
	'pg_upgrade from the old cluster to the new one');
chdir $cwd or die "cannot chdir back to $cwd: $!";

# the user copies one index's sidecar over by hand
my $copied_dir = $new->data_dir . "/hannoy/$old_dir{copied_v}";
system('rm', '-rf', $copied_dir) == 0 or die "cannot remove $copied_dir";
system('cp', '-a', $old->data_dir . "/hannoy/$old_dir{copied_v}", $copied_dir) == 0
  or die 'cannot copy the sidecar';

$new->start;
is(sidecar_of($new, 'items_v'), $old_dir{items_v}, 'pg_upgrade kept the relfilenode and database OID');
my ($control) = run_command([ 'pg_controldata', $old->data_dir ]);
my ($old_sysid) = $control =~ /^Database system identifier:\s+(\d+)$/m;
isnt($new->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
	$old_sysid, 'the new cluster has another system identifier than the old one');

my %why = (
	items => qr/its sidecar belongs to another build/,
	copied => qr/its sidecar was written by another database system/);

for my $table ('items', 'copied')
{
	my $plan = $new->safe_psql('app',
		"EXPLAIN (COSTS OFF) SELECT id FROM $table ORDER BY v <-> $query LIMIT 5");
	unlike($plan, qr/Index Scan using ${table}_v/, "$table: the planner does not choose the upgraded index");

	my ($ret, $out, $err) = $new->psql('app', qq{
		SET enable_seqscan = off;
		SELECT id FROM $table ORDER BY v <-> $query LIMIT 5;});
	isnt($ret, 0, "$table: a scan forced onto the index fails");
	like($err, qr/cannot be used: /, "$table: the error says the index cannot be used");
	like($err, $why{$table}, "$table: and why");
	like($err, qr/HINT:\s+REINDEX INDEX ${table}_v/, "$table: the HINT says REINDEX");

	($ret, $out, $err) = $new->psql('app', "INSERT INTO $table VALUES (5000, $query)");
	is($ret, 0, "$table: an insert succeeds");
	like($err, qr/WARNING:.*${table}_v.*cannot be used/, "$table: with a WARNING about the index");
	($ret, $out, $err) = $new->psql('app', "DELETE FROM $table WHERE id = 1; VACUUM $table");
	is($ret, 0, "$table: VACUUM succeeds");
	like($err, qr/WARNING:.*${table}_v.*cannot be used/, "$table: with a WARNING about the index");
	is($new->safe_psql('app', "SELECT kind FROM hannoy_verify('${table}_v')"),
		'metapage/sidecar mismatch', "$table: hannoy_verify reports the mismatch");

	$new->safe_psql('app', "REINDEX INDEX ${table}_v");
	like(
		$new->safe_psql('app', "EXPLAIN (COSTS OFF) SELECT id FROM $table ORDER BY v <-> $query LIMIT 5"),
		qr/Index Scan using ${table}_v/, "$table: after REINDEX the planner uses the index");
	my ($idx) = scan_ids($new, $table, 'index', query => $query, db => 'app');
	my ($seq) = scan_ids($new, $table, 'seq', db => 'app');
	compare_id_sets($idx, $seq, "$table: after REINDEX an unbounded index scan equals a sequential scan");
	my $top = "SELECT string_agg(id::text, ',') FROM (SELECT id FROM $table ORDER BY v <-> $query, id LIMIT 10) s";
	my $exact = $new->safe_psql('app',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top");
	my $got = $new->safe_psql('app', "SET enable_seqscan = off; SET hannoy.ef_search = 1000;
		SELECT string_agg(id::text, ',') FROM (SELECT id FROM $table ORDER BY v <-> $query LIMIT 10) s");
	is($got, $exact, "$table: with ef_search above the row count the top 10 is exact");
	is_deeply(verify_problems($new, "${table}_v", db => 'app'), [], "$table: the rebuilt index verifies clean");
}

is($new->safe_psql('app', 'SELECT hannoy_sweep()'), '0', 'hannoy_sweep() finds nothing to remove');
is_deeply([ sidecar_dirs($new) ], [ expected_sidecar_dirs($new) ],
	'the sidecars are exactly those of the hannoy indexes');

$new->stop;
done_testing();
