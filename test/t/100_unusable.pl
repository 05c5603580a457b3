# An index whose sidecar cannot be trusted is never silently wrong (DESIGN.md "Never silently
# wrong"):
#  - a missing sidecar: the planner stops choosing the index, a scan forced
#    onto it (enable_seqscan = off) fails with a HINT naming REINDEX,
#    inserts and VACUUM go on with a WARNING and mark the index broken, and
#    REINDEX makes it exact again;
#  - CREATE DATABASE ... TEMPLATE and ALTER INDEX ... SET TABLESPACE copy
#    the relation file but no sidecar: unusable, then exact after REINDEX;
#  - on a hot standby the copied index is not used (queries stay correct)
#    until the standby has rebuilt it from its own table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Path qw(rmtree);

use HannoyTestUtil;

my $node = hannoy_node('unusable',
	conf => "wal_level = replica\nmax_wal_senders = 4\nautovacuum = off");
my $query = "'{0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8}'";

# Fills a table with seeded 8-d rows and a hannoy index.
sub make_table
{
	my ($db, $table, $rows) = @_;
	my $vecs = seeded_vectors($rows, 8, 11);
	my $values = join(',', map { sprintf("(%d, '%s')", $_ + 1, vector_literal($vecs->[$_])) } 0 .. $rows - 1);
	$node->safe_psql($db, "CREATE TABLE $table (id int, v real[]); INSERT INTO $table VALUES $values;"
		  . " CREATE INDEX ${table}_v ON $table USING hannoy (v);");
}

# The plan of the LIMIT query with default settings.
sub plan_of
{
	my ($db, $table) = @_;
	return $node->safe_psql($db,
		"EXPLAIN (COSTS OFF) SELECT id FROM $table ORDER BY v <-> $query LIMIT 5");
}

# Checks that the index of $table is exact again (after REINDEX).
sub exact_again
{
	my ($db, $table, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	like(plan_of($db, $table), qr/Index Scan using ${table}_v/, "$what: the planner uses the index again");
	my ($idx) = scan_ids($node, $table, 'index', query => $query, db => $db);
	my ($seq) = scan_ids($node, $table, 'seq', db => $db);
	compare_id_sets($idx, $seq, "$what: after REINDEX an unbounded index scan equals a sequential scan");
}

############################################################################
# A missing sidecar.
############################################################################
make_table('postgres', 'gone', 500);
like(plan_of('postgres', 'gone'), qr/Index Scan using gone_v/, 'a healthy index is used');
my $dir = $node->safe_psql('postgres', q{
	SELECT format('%s_%s_%s', d.dattablespace, d.oid, pg_relation_filenode('gone_v'))
	  FROM pg_database d WHERE d.datname = current_database()});
$node->stop;
rmtree($node->data_dir . "/hannoy/$dir");
$node->start;

unlike(plan_of('postgres', 'gone'), qr/Index Scan using gone_v/,
	'without its sidecar the planner no longer chooses the index');
my ($ret, $out, $err) = $node->psql('postgres', qq{
	SET enable_seqscan = off;
	SELECT id FROM gone ORDER BY v <-> $query LIMIT 5;});
isnt($ret, 0, 'a scan forced onto the index fails');
like($err, qr/cannot be used: its sidecar is missing/, 'the error says why');
like($err, qr/HINT:\s+REINDEX INDEX gone_v/, 'the HINT says REINDEX');

($ret, $out, $err) = $node->psql('postgres', "INSERT INTO gone VALUES (1000, $query)");
is($ret, 0, 'an insert still succeeds');
like($err, qr/WARNING:.*gone_v.*cannot be used/, 'with a WARNING about the index');
($ret, $out, $err) = $node->psql('postgres', 'DELETE FROM gone WHERE id = 1; VACUUM gone');
is($ret, 0, 'VACUUM still succeeds');
like($err, qr/WARNING:.*gone_v.*cannot be used/, 'with a WARNING about the index');
is($node->safe_psql('postgres', "SELECT kind FROM hannoy_verify('gone_v')"), 'sidecar missing',
	'hannoy_verify reports the missing sidecar');
$node->safe_psql('postgres', 'REINDEX INDEX gone_v');
exact_again('postgres', 'gone', 'missing sidecar');

############################################################################
# CREATE DATABASE ... TEMPLATE copies files, not sidecars.
############################################################################
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', 'CREATE EXTENSION hannoy');
make_table('tmpl', 'copied', 300);
$node->safe_psql('postgres', 'CREATE DATABASE fromtmpl TEMPLATE tmpl');
unlike(plan_of('fromtmpl', 'copied'), qr/Index Scan using copied_v/,
	'in a database copied from a template the index is not used');
$node->safe_psql('fromtmpl', 'REINDEX INDEX copied_v');
exact_again('fromtmpl', 'copied', 'template copy');
exact_again('tmpl', 'copied', 'the template itself');

############################################################################
# ALTER INDEX ... SET TABLESPACE copies the file, not the sidecar.
############################################################################
my $spc = PostgreSQL::Test::Utils::tempdir;
$node->safe_psql('postgres', "CREATE TABLESPACE elsewhere LOCATION '$spc'");
make_table('postgres', 'moved', 300);
$node->safe_psql('postgres', 'ALTER INDEX moved_v SET TABLESPACE elsewhere');
unlike(plan_of('postgres', 'moved'), qr/Index Scan using moved_v/,
	'after SET TABLESPACE the index is not used');
$node->safe_psql('postgres', 'REINDEX INDEX moved_v');
exact_again('postgres', 'moved', 'SET TABLESPACE');
# a plain base backup below would copy the tablespace onto itself
$node->safe_psql('postgres', 'DROP TABLE moved; DROP TABLESPACE elsewhere;');

############################################################################
# A hot standby never trusts the sidecar its base backup copied: the index
# is not used there until the standby has rebuilt it from its own table
# (held back here with hannoy.test_pause_linker).
############################################################################
make_table('postgres', 'replicated', 400);
$node->append_conf('pg_hba.conf', 'local replication all trust');
$node->reload;
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$standby->start;
$node->safe_psql('postgres', "INSERT INTO replicated VALUES (5000, $query)");
$node->wait_for_catchup($standby);
my $sql = "SELECT id FROM replicated ORDER BY v <-> $query LIMIT 5";
my $splan = $standby->safe_psql('postgres', "EXPLAIN (COSTS OFF) $sql");
unlike($splan, qr/Index Scan using replicated_v/,
	'on the standby the planner does not use the copied index');
is($standby->safe_psql('postgres', "SELECT id FROM replicated ORDER BY v <-> $query LIMIT 1"),
	'5000', 'and the standby answers exactly');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
ok(index_used_soon($standby, $sql, 'replicated_v'), 'once rebuilt from its table the index is used');
is($standby->safe_psql('postgres',
		"SET enable_seqscan = off; SELECT id FROM replicated ORDER BY v <-> $query LIMIT 1"),
	'5000', 'and answers exactly');
$standby->stop;

$node->stop;
done_testing();
