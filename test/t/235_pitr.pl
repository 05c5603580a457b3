# A point-in-time restore to a named restore point (also to an LSN and a
# time: the same point) keeps the hannoy indexes
# created after its base backup (DESIGN.md "Promotion, PITR, crash
# recovery"): the restore's redo keeps their replicas, and when recovery
# ends at the target they become the restored server's own sidecars, on
# the new timeline, without REINDEX:
#  - the planner uses the index, and an unbounded index scan returns
#    exactly the rows the heap had at the restore point (not the later
#    ones), which is also what the seq scan returns;
#  - the top 10 at a wide ef_search are the exact top 10;
#  - inserts, DELETE and VACUUM work, and hannoy_verify finds nothing,
#    also after a restart;
# and an index older than the base backup, whose copied sidecar is not
# trusted, is rebuilt from the table while a second restore waits at its
# target (recovery_target_action = 'pause'), answers exactly there, and
# stays usable once recovery ends (DESIGN.md "Rebuilding a replica from the
# table"); restores to the LSN and the time of that point, promoted at once,
# rebuild it on the new primary (DESIGN.md "Rebuilding on a primary").
# Every target lies in the middle of a write load (pgbench inserting and
# deleting, VACUUM) on a third table: each restore's index on it returns
# exactly the rows its heap has at that point.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use HannoyTestUtil;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(has_archiving => 1, allows_streaming => 1);
$primary->append_conf('postgresql.conf',
	"jit = off\nshared_preload_libraries = 'hannoy'\nautovacuum = off");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION hannoy');

my $dims = 8;
my $vectors = seeded_vectors(1500, $dims, 41);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 3)->[0]) . "'::real[]";

sub insert_rows
{
	my ($node, $from, $to, $table) = @_;
	$table //= 'items';
	$node->safe_psql('postgres',
		"INSERT INTO $table VALUES "
		  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to));
}

# older than the base backup: the restore rebuilds it from the table
$primary->safe_psql('postgres', 'CREATE TABLE old (id int PRIMARY KEY, v real[])');
insert_rows($primary, 0, 399, 'old');
$primary->safe_psql('postgres', 'CREATE INDEX old_v ON old USING hannoy (v real_l2_ops)');
$primary->backup('base');
insert_rows($primary, 400, 599, 'old');
$primary->safe_psql('postgres', 'DELETE FROM old WHERE id % 7 = 0; VACUUM old');
my $old_at_target = $primary->safe_psql('postgres', 'SELECT id FROM old ORDER BY id');

# created after the base backup: the restore replays its creation
$primary->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops)');
insert_rows($primary, 0, 799);
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 6 = 0; VACUUM items');
insert_rows($primary, 800, 999);
my $at_target = $primary->safe_psql('postgres', 'SELECT id FROM items ORDER BY id');

# A write load on a third table runs across every target: pgbench inserts and deletes in
# table load while the targets are taken, and VACUUM removes rows meanwhile.
$primary->safe_psql('postgres', 'CREATE TABLE load (id serial PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX load_v ON load USING hannoy (v real_l2_ops)');
$primary->safe_psql('postgres',
	"INSERT INTO load (v) SELECT array_agg(random()::real) FROM generate_series(1, $dims) g, "
	  . "generate_series(1, 200) r GROUP BY r");
my $script = $primary->basedir . '/load.sql';
PostgreSQL::Test::Utils::append_to_file(
	$script, qq{\\set r random(1, 10)
\\if :r <= 8
INSERT INTO load (v) SELECT array_agg(random()::real) FROM generate_series(1, $dims);
\\else
DELETE FROM load WHERE id = (SELECT max(id) FROM load) - 3;
\\endif
});
my ($load_out, $load_err) = ('', '');
my $load = IPC::Run::start(
	[
		'pgbench', '-n', '-c', 2, '-T', 600, '-f', $script, '-h', $primary->host,
		'-p', $primary->port, 'postgres'
	],
	'<', \undef, '>', \$load_out, '2>', \$load_err);
my $load_rows = sub { $primary->safe_psql('postgres', 'SELECT count(*) FROM load') };
ok(wait_until(60, sub { $load_rows->() >= 400 }), 'the write load runs');
$primary->safe_psql('postgres', 'VACUUM load');

# the point as an LSN and a time, for the restores to those targets, then as a name: for the
# quiet tables the same point, for load three points in the middle of its writes
my $target_lsn = $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
my $target_time = $primary->safe_psql('postgres', 'SELECT clock_timestamp()');
$primary->safe_psql('postgres', "SELECT pg_create_restore_point('before_mistake')");
my $rows_at_target = $load_rows->();
ok(wait_until(60, sub { $load_rows->() >= $rows_at_target + 200 }),
	'the write load goes on past the targets');
# SIGTERM, not SIGINT: a shell that starts the suite in the background leaves SIGINT ignored in
# everything it runs, and pgbench would then go on for its whole -T
$load->signal('TERM');
eval { $load->finish };
# after the restore point: rows the restored server must not have
insert_rows($primary, 1000, 1299);
insert_rows($primary, 600, 699, 'old');
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 5 = 0; VACUUM items');
my $walfile = $primary->safe_psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())');
$primary->safe_psql('postgres', 'SELECT pg_switch_wal()');
ok( wait_until(
		60,
		sub {
			$primary->safe_psql('postgres',
				"SELECT coalesce(last_archived_wal >= '$walfile', false) FROM pg_stat_archiver") eq
			  't';
		}),
	'the WAL past the restore point is archived');
$primary->stop;

our $restored = PostgreSQL::Test::Cluster->new('restored');
$restored->init_from_backup($primary, 'base', has_restoring => 1);
$restored->append_conf('postgresql.conf',
	"recovery_target_name = 'before_mistake'\nrecovery_target_action = 'promote'");
$restored->start;
ok(wait_until(60, sub { $restored->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 'f' }),
	'the restore reaches its target and is promoted');

# Checks that $node ($restored by default) answers through the index exactly with the rows $want
# (ids, one a line).
sub answers
{
	my ($want, $label, $node) = @_;
	local $restored = $node if defined $node;
	my $top = "SELECT id, v <-> $query FROM items ORDER BY v <-> $query LIMIT 10";
	like($restored->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
		qr/Index Scan using items_v on items/, "$label: the planner uses the index");
	my ($got) = scan_ids($restored, 'items', 'index', query => $query);
	compare_id_sets($got, [ split /\n/, $want ], "$label: the index scan returns exactly these rows");
	my ($seq) = scan_ids($restored, 'items', 'seq');
	compare_id_sets($seq, [ split /\n/, $want ], "$label: and so does the seq scan");
	is( $restored->safe_psql('postgres',
			"SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top"),
		$restored->safe_psql('postgres',
			"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
		"$label: the top 10 equal the exact top 10");
}

# Checks that $node's index on load returns exactly the rows its heap has: a point in the middle
# of the write load.
sub load_answers
{
	my ($node, $label) = @_;
	my ($got) = scan_ids($node, 'load', 'index', query => $query);
	my ($seq) = scan_ids($node, 'load', 'seq');
	ok(@$seq > 200, "$label: load has rows of the write load (" . scalar(@$seq) . ')');
	compare_id_sets($got, $seq,
		"$label: load's index returns exactly the rows its heap has, written under load");
}

answers($at_target, 'at the restore point');
load_answers($restored, 'at the restore point');
like(PostgreSQL::Test::Utils::slurp_file($restored->logfile),
	qr/hannoy sidecar "[^"]+" kept from WAL is now this server's own \(timeline 2\)/,
	'the replica became the restored server\'s own on the new timeline');
insert_rows($restored, 1300, 1499);
$restored->safe_psql('postgres', 'DELETE FROM items WHERE id % 7 = 0; VACUUM items');
answers($restored->safe_psql('postgres', 'SELECT id FROM items ORDER BY id'),
	'after inserts, DELETE and VACUUM');
is(join("\n", @{ verify_problems($restored, 'items_v') }), '', 'hannoy_verify finds nothing');
$restored->restart;
answers($restored->safe_psql('postgres', 'SELECT id FROM items ORDER BY id'), 'after a restart');
is(join("\n", @{ verify_problems($restored, 'items_v') }), '',
	'hannoy_verify finds nothing after the restart');

$restored->stop;

# A second restore, paused at its target: old_v is rebuilt from the table meanwhile
my $paused = PostgreSQL::Test::Cluster->new('paused');
$paused->init_from_backup($primary, 'base', has_restoring => 1);
$paused->append_conf('postgresql.conf',
	"recovery_target_name = 'before_mistake'\nrecovery_target_action = 'pause'");
$paused->start;
ok( wait_until(
		60, sub { $paused->safe_psql('postgres', 'SELECT pg_get_wal_replay_pause_state()') eq 'paused' }
	),
	'the second restore pauses at its target');
my $old_top = "SELECT id, v <-> $query FROM old ORDER BY v <-> $query LIMIT 10";
ok(index_used_soon($paused, $old_top, 'old_v'),
	'old_v, older than the base backup, is rebuilt from the table while recovery waits');
my ($old_got) = scan_ids($paused, 'old', 'index', query => $query);
compare_id_sets($old_got, [ split /\n/, $old_at_target ],
	'the rebuilt index returns exactly the rows at the restore point');
load_answers($paused, 'paused at the restore point');
$paused->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
ok(wait_until(60, sub { $paused->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 'f' }),
	'recovery ends when resumed');
like($paused->safe_psql('postgres', "EXPLAIN (COSTS OFF) $old_top"),
	qr/Index Scan using old_v on old/, 'the rebuilt index stays usable after recovery');
($old_got) = scan_ids($paused, 'old', 'index', query => $query);
compare_id_sets($old_got, [ split /\n/, $old_at_target ], 'and exact');
is( $paused->safe_psql('postgres', "SET hannoy.ef_search = 1000; SET enable_seqscan = off; $old_top"),
	$paused->safe_psql('postgres', "SET enable_indexscan = off; SET enable_bitmapscan = off; $old_top"),
	'its top 10 equal the exact top 10');
$paused->stop;

# Restores to an LSN and to a time, the point of the named restore point:
# the same rows, through both indexes
for my $target ([ 'an LSN', 'lsn', "recovery_target_lsn = '$target_lsn'" ],
	[ 'a time', 'time', "recovery_target_time = '$target_time'" ])
{
	my ($what, $name, $conf) = @$target;
	my $node = PostgreSQL::Test::Cluster->new("to_$name");
	$node->init_from_backup($primary, 'base', has_restoring => 1);
	# the history of the first timeline: the restores above archived timelines of their own
	$node->append_conf('postgresql.conf',
		"$conf\nrecovery_target_timeline = 'current'\nrecovery_target_action = 'promote'");
	$node->start;
	ok(wait_until(60, sub { $node->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 'f' }),
		"the restore to $what reaches its target and is promoted");
	answers($at_target, "restored to $what", $node);
	load_answers($node, "restored to $what");
	ok(index_used_soon($node, $old_top, 'old_v'),
		"restored to $what: old_v, older than the base backup, is rebuilt from the table");
	($old_got) = scan_ids($node, 'old', 'index', query => $query);
	compare_id_sets($old_got, [ split /\n/, $old_at_target ],
		"restored to $what: old_v returns exactly the rows at the target");
	$node->stop;
}
done_testing();
