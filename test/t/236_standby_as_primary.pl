# A standby started as a primary (standby.signal removed) after an
# immediate stop replays the WAL it had received but not applied as crash
# recovery; hannoy's redo goes on staging those rows into the replicas
# there, gated by their stamps, and the replicas are adopted when recovery
# ends (DESIGN.md "Redo: replica sidecars", "Promotion, PITR, crash
# recovery"): the index answers with exactly the rows the heap has.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $primary = hannoy_node('primary',
	conf => "wal_level = replica\nmax_wal_senders = 4\nautovacuum = off");
my $standby = hannoy_standby($primary, 'standby');

my $dims = 8;
my $vectors = seeded_vectors(1000, $dims, 51);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 5)->[0]) . "'::real[]";

sub insert_rows
{
	my ($from, $to) = @_;
	$primary->safe_psql('postgres',
		'INSERT INTO items VALUES '
		  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to));
}

$primary->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops)');
insert_rows(0, 299);
$primary->wait_for_catchup($standby);

# from now on the standby receives WAL but does not apply it
$standby->append_conf('postgresql.conf', "recovery_min_apply_delay = '1h'");
$standby->reload;
insert_rows(300, 799);
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 4 = 0; VACUUM items');
my $want = $primary->safe_psql('postgres', 'SELECT id FROM items ORDER BY id');
my $end = $primary->lsn('insert');
ok( wait_until(
		60,
		sub {
			$standby->safe_psql('postgres', "SELECT pg_last_wal_receive_lsn() >= '$end'") eq 't';
		}),
	'the standby received everything');
is($standby->safe_psql('postgres', "SELECT pg_last_wal_replay_lsn() < '$end'"),
	't', 'and has not applied all of it');
$primary->stop;

$standby->stop('immediate');
unlink($standby->data_dir . '/standby.signal') or die "cannot remove standby.signal: $!";
$standby->append_conf('postgresql.conf', "recovery_min_apply_delay = 0");
$standby->start;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'it runs as a primary');

my $top = "SELECT id, v <-> $query FROM items ORDER BY v <-> $query LIMIT 10";
like($standby->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
	qr/Index Scan using items_v on items/, 'the planner uses the index');
my ($got) = scan_ids($standby, 'items', 'index', query => $query);
compare_id_sets($got, [ split /\n/, $want ],
	'the index scan returns exactly the rows the primary had');
my ($seq) = scan_ids($standby, 'items', 'seq');
compare_id_sets($seq, [ split /\n/, $want ], 'and so does the seq scan');
is( $standby->safe_psql('postgres', "SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top"),
	$standby->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
	'the top 10 equal the exact top 10');
like(PostgreSQL::Test::Utils::slurp_file($standby->logfile),
	qr/hannoy sidecar "[^"]+" kept from WAL is now this server's own \(timeline 1\)/,
	'the replica was adopted');
is(join("\n", @{ verify_problems($standby, 'items_v') }), '', 'hannoy_verify finds nothing');

$standby->stop;
done_testing();
