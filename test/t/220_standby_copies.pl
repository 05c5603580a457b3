# Replica sidecars on standbys that crash and on copies of standbys
# (DESIGN.md "Replication and recovery"):
#  - a hot standby stopped in immediate mode (its processes quit at once,
#    no restartpoint) while it replays inserts, updates, deletes and VACUUM,
#    five times (HANNOY_STANDBY_KILLS sets how many), answers exactly
#    through its replica afterwards (redo is gated by the applied-LSN stamp
#    and synced);
#  - a base backup taken from that standby copies its replicas, which the
#    new standby never trusts (the postmaster removes their markers when
#    backup_label exists, also after a restart): while its linker is paused
#    the index is not used there and answers stay exact; let go, the linker
#    has the index rebuilt from the copy's own table, used and exact, and a
#    REINDEX on the primary later gives it a replica from WAL as usual.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use HannoyTestUtil;

my $primary = hannoy_node('primary',
	conf => "wal_level = replica\nmax_wal_senders = 8\nautovacuum = off");
my $standby = hannoy_standby($primary, 'standby');

my $dims = 10;
my $vectors = seeded_vectors(4000, $dims, 21);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 5)->[0]) . "'::real[]";

# Inserts rows $from..$to of the seeded vectors into items.
sub insert_sql
{
	my ($from, $to) = @_;
	return "INSERT INTO items VALUES "
	  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to)
	  . ";\n";
}

# Checks that $node's complete index scan of items returns exactly its seq scan's rows.
sub answers_exactly
{
	my ($node, $label) = @_;
	my ($got) = scan_ids($node, 'items', 'index', query => $query);
	my ($want) = scan_ids($node, 'items', 'seq');
	compare_id_sets($got, $want, "$label: the index scan returns every row");
}

$primary->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops)');
$primary->safe_psql('postgres', insert_sql(0, 199));

############################################################################
# The standby stopped abruptly while it replays a write load
############################################################################
my $script = $primary->basedir . '/load.sql';
my $sql = '';
for my $batch (0 .. 59)
{
	my $first = 200 + $batch * 50;
	$sql .= insert_sql($first, $first + 49);
	$sql .= "UPDATE items SET v = v WHERE id % 11 = $batch % 11;\n";
	$sql .= "DELETE FROM items WHERE id % 13 = $batch % 13 AND id < $first;\n";
	$sql .= "VACUUM items;\n" if $batch % 10 == 9;
}
PostgreSQL::Test::Utils::append_to_file($script, $sql);
my $kills = $ENV{HANNOY_STANDBY_KILLS} // 5;
die "HANNOY_STANDBY_KILLS must be a positive integer" unless $kills =~ /^[1-9]\d*$/;
my ($h, $out, $err) = run_psql_script($primary, $script);
for my $round (1 .. $kills)
{
	Time::HiRes::usleep(400_000);
	$standby->stop('immediate');
	$standby->start;
}
$h->finish;
is($$err, '', 'the write load ran without error');
$primary->wait_for_catchup($standby);
answers_exactly($standby, "after $kills immediate stops of the standby during replay");
my $top = "SELECT id, v <-> $query FROM items ORDER BY v <-> $query LIMIT 10";
# the replica's linker puts the rows into a graph: the widest search is exact
is( $standby->safe_psql('postgres', "SET enable_seqscan = off; SET hannoy.ef_search = 1000; $top"),
	$primary->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
	'the standby\'s top 10 equal the exact top 10 on the primary');
is( join("\n",
		@{ HannoyTestUtil::log_problems($standby, allow => qr/terminating walreceiver process/) }),
	'',
	'the standby logged no problem');

############################################################################
# A copy of the standby trusts none of the replicas it copied
############################################################################
# the backup starts at the standby's last restartpoint: one after CREATE INDEX,
# so the copy does not replay the index's creation and must rely on the copy
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($standby);
$standby->backup('from_standby');
my $copy = PostgreSQL::Test::Cluster->new('copy');
$copy->init_from_backup($standby, 'from_standby', has_streaming => 1);
# the linker paused: nothing is rebuilt from the table until the checks below
$copy->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
my $copied = join(',', grep { -e $copy->data_dir . "/hannoy/$_/replica" } sidecar_dirs($copy));
isnt($copied, '', 'the base backup of the standby copied replica markers');
$copy->start;
is(join(',', grep { -e $copy->data_dir . "/hannoy/$_/replica" } sidecar_dirs($copy)),
	'', 'the copy removed them at start-up');
$primary->safe_psql('postgres', insert_sql(3500, 3599));
$primary->wait_for_catchup($standby);
$standby->wait_for_catchup($copy, 'replay', $primary->lsn('insert'));
unlike(
	$copy->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
	qr/Index Scan using items_v/,
	'the copy does not use the index');
is( $copy->safe_psql('postgres', $top),
	$primary->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
	'and answers exactly without it');
$copy->restart;
is(join(',', grep { -e $copy->data_dir . "/hannoy/$_/replica" } sidecar_dirs($copy)),
	'', 'a restart trusts nothing it copied');

$copy->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$copy->reload;
ok(index_used_soon($copy, $top, 'items_v'),
	'the copy rebuilds the index from its own table and uses it');
answers_exactly($copy, 'the copy after its rebuild');
is( $copy->safe_psql('postgres', "SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top"),
	$primary->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
	'the rebuilt index\'s top 10 equal the exact top 10');

$primary->safe_psql('postgres', 'REINDEX INDEX items_v');
$primary->wait_for_catchup($standby);
$standby->wait_for_catchup($copy, 'replay', $primary->lsn('insert'));
like($copy->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
	qr/Index Scan using items_v/, 'after REINDEX on the primary the copy uses the index');
answers_exactly($copy, 'the copy after REINDEX');
answers_exactly($standby, 'the standby after REINDEX');

$copy->stop;
$standby->stop;
$primary->stop;
done_testing();
