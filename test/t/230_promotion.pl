# A promoted standby keeps its hannoy indexes (DESIGN.md "Promotion, PITR,
# crash recovery"): the replicas its redo kept become its own sidecars, with
# rows still staged at the promotion (the linker paused by
# hannoy.test_pause_linker) and tombstones redo left, and
#  - after a crash right after the promotion (crash recovery replays the old
#    timeline's records before anything adopted the replica), then on the
#    new primary: the planner uses the index, an unbounded index scan
#    returns exactly the seq-scan rows, the top 10 at a wide ef_search are
#    the exact top 10, while rows are still staged and after new inserts;
#  - VACUUM links the staged rows before its walk, removes and repairs;
#  - the linker, let go, links what another index still has staged (one a
#    backend adopted, after a restart, by the hint file adoption left) and
#    adopts and links a replica nobody used since the promotion;
#  - a restart and an immediate stop keep every index usable and exact,
#    and hannoy_verify finds nothing;
#  - a replica redo stopped trusting (hannoy.test_fail_redo) is never
#    adopted: unusable after the promotion while the linker is paused, then
#    rebuilt from the table on the new primary and exact;
#  - the old primary, rejoined with pg_rewind as a standby of the new one,
#    trusts none of the sidecars pg_rewind copied (its linker paused): let
#    go, it rebuilds them from its own table, with no REINDEX.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $primary = hannoy_node('primary',
	conf => "wal_level = replica\nmax_wal_senders = 4\nautovacuum = off\nwal_log_hints = on\nwal_keep_size = 256MB");
my $standby = hannoy_standby($primary, 'standby');

my $dims = 10;
my $vectors = seeded_vectors(2000, $dims, 31);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 7)->[0]) . "'::real[]";

# Inserts rows $from..$to of the seeded vectors into $table on $node (every
# 50th row with a NULL vector).
sub insert_rows
{
	my ($node, $table, $from, $to) = @_;
	$node->safe_psql('postgres',
		"INSERT INTO $table VALUES "
		  . join(',',
			map { $_ % 50 == 49 ? "($_, NULL)" : "($_, '" . vector_literal($vectors->[$_]) . "')" }
			  $from .. $to));
}

# The staged rows and tombstones of $index on $node.
sub staged_and_tombstones
{
	my ($node, $index) = @_;
	return $node->safe_psql('postgres',
		"SELECT staged_rows || '|' || tombstones FROM hannoy_index_stats('$index')");
}

# Checks that $node answers through the index of $table exactly: the plan,
# the unbounded scan against the seq scan, the top 10 at ef_search 1000
# against the exact top 10 (ids and distances).
sub answers_exactly
{
	my ($node, $table, $label) = @_;
	my $top = "SELECT id, v <-> $query FROM $table ORDER BY v <-> $query LIMIT 10";
	like($node->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
		qr/Index Scan using ${table}_v on $table/, "$label: the planner uses ${table}_v");
	my ($got) = scan_ids($node, $table, 'index', query => $query);
	my ($want) = scan_ids($node, $table, 'seq');
	compare_id_sets($got, $want, "$label: the unbounded index scan of $table returns every row");
	is( $node->safe_psql('postgres', "SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top"),
		$node->safe_psql('postgres',
			"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
		"$label: the top 10 of $table equal the exact top 10");
}

# Checks that the index of $table is not used on $node and that $node still answers exactly.
sub index_unused
{
	my ($node, $table, $label) = @_;
	my $top = "SELECT id FROM $table ORDER BY v <-> $query LIMIT 10";
	unlike($node->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top"),
		qr/Index Scan using ${table}_v/, "$label: the planner does not use ${table}_v");
	is( $node->safe_psql('postgres', $top),
		$node->safe_psql('postgres',
			"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
		"$label: $table is answered exactly without it");
}

# Markers of replicas in $node's data directory.
sub markers
{
	my ($node) = @_;
	return join(',', grep { -e $node->data_dir . "/hannoy/$_/replica" } sidecar_dirs($node));
}

for my $t (qw(items more late bad))
{
	$primary->safe_psql('postgres', "CREATE TABLE $t (id int PRIMARY KEY, v real[])");
	$primary->safe_psql('postgres', "CREATE INDEX ${t}_v ON $t USING hannoy (v real_l2_ops)");
}

# linked on the standby before the promotion: rows, removals, a repair
insert_rows($primary, 'items', 0, 599);
insert_rows($primary, 'more', 0, 299);
insert_rows($primary, 'late', 0, 299);
insert_rows($primary, 'bad', 0, 99);
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 9 = 0; VACUUM items');
$primary->wait_for_catchup($standby);
wait_until(60,
	sub {
		return !grep { staged_and_tombstones($standby, "${_}_v") ne '0|0' } qw(items more late);
	});
is(staged_and_tombstones($standby, 'items_v'), '0|0', 'the standby linked everything so far');

# a record redo cannot apply: the standby stops trusting bad_v's replica
# (the linker paused from now on: it would rebuild bad_v from the table)
my $offset = -s $standby->logfile;
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = on');
$standby->reload;
my $next = 100;
ok( wait_until(
		30,
		sub {
			insert_rows($primary, 'bad', $next, $next);
			$next++;
			$primary->wait_for_catchup($standby);
			return PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
			  /could not replay a hannoy WAL record/;
		}),
	'redo fails on a record of bad_v');
$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = off');
$standby->reload;
index_unused($standby, 'bad', 'the standby after the failed redo');

# the linker paused: what comes now stays staged, removals stay tombstones
insert_rows($primary, 'items', 600, 1199);
insert_rows($primary, 'more', 300, 599);
insert_rows($primary, 'late', 300, 599);
$primary->safe_psql('postgres',
	'UPDATE items SET v = v WHERE id % 13 = 0; DELETE FROM items WHERE id % 7 = 0 AND id < 600;'
	  . ' VACUUM items');
insert_rows($primary, 'bad', 300, 349);
# a checkpoint the old primary's pg_rewind finds before the divergence
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($standby);
like(staged_and_tombstones($standby, 'items_v'),
	qr/^[1-9]\d*\|[1-9]\d*$/, 'at the promotion items_v has staged rows and tombstones');
like(staged_and_tombstones($standby, 'more_v'),
	qr/^[1-9]\d*\|0$/, 'and more_v staged rows');
my $staged_more = (split /\|/, staged_and_tombstones($standby, 'more_v'))[0];

############################################################################
# Promotion, and a crash right after it
############################################################################
$standby->promote;
$standby->stop('immediate');
isnt(markers($standby), '', 'the replicas are still to be adopted at the crash');
$offset = -s $standby->logfile;
$standby->start;
my $new = $standby;
is($new->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'the new primary is up');

answers_exactly($new, 'items', 'after the promotion and a crash, rows still staged');
like(PostgreSQL::Test::Utils::slurp_file($new->logfile, $offset),
	qr/hannoy sidecar "[^"]+" kept from WAL is now this server's own \(timeline 2\)/,
	'the replica was adopted on the new timeline');
like(staged_and_tombstones($new, 'items_v'), qr/^[1-9]\d*\|[1-9]\d*$/,
	'the adopted sidecar keeps its staged rows and tombstones meanwhile');
index_unused($new, 'bad', 'the replica redo stopped trusting after the promotion');
my ($bad) = @{ verify_problems($new, 'bad_v') };
like($bad // '', qr/may be torn|being rebuilt from the table/,
	'hannoy_verify reports it unusable, to be rebuilt');

# writes on the new primary while rows are staged
insert_rows($new, 'items', 1200, 1399);
answers_exactly($new, 'items', 'after inserts on the new primary');
$new->safe_psql('postgres', 'DELETE FROM items WHERE id % 5 = 0 AND id >= 600; VACUUM items');
is(staged_and_tombstones($new, 'items_v'), '0|0',
	'VACUUM linked the staged rows before its walk, and repaired around every removal');
answers_exactly($new, 'items', 'after DELETE and VACUUM on the new primary');
is(join("\n", @{ verify_problems($new, 'items_v') }), '', 'hannoy_verify finds nothing in items_v');

# the linker, let go, links more_v's staged rows after the promotion
$new->stop('immediate');
$new->start;
answers_exactly($new, 'more', 'after an immediate stop, more_v still staged');
is((split /\|/, staged_and_tombstones($new, 'more_v'))[0], $staged_more,
	'more_v kept its staged rows while the linker was paused');
$new->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$new->reload;
ok(wait_until(60, sub { staged_and_tombstones($new, 'more_v') eq '0|0' }),
	'the linker links the staged rows after the promotion');
# late_v was used by nobody since the promotion: the linker adopts it itself
ok(wait_until(60, sub { markers($new) eq '' }), 'the linker adopts the last replica');
# adoption comes first, then the linking in batches
ok(wait_until(60, sub { staged_and_tombstones($new, 'late_v') eq '0|0' }),
	'and links its staged rows');
answers_exactly($new, 'late', 'adopted and linked by the linker');
insert_rows($new, 'more', 600, 799);
answers_exactly($new, 'more', 'after the linker and inserts');
is(join("\n", @{ verify_problems($new, 'more_v') }), '', 'hannoy_verify finds nothing in more_v');
is(markers($new), '', 'no replica marker is left on the new primary');

# restarts keep everything usable and exact
$new->restart;
answers_exactly($new, $_, 'after a restart') for qw(items more late);
insert_rows($new, 'items', 1400, 1499);
$new->stop('immediate');
$new->start;
answers_exactly($new, $_, 'after an immediate stop') for qw(items more late);
is(join("\n", @{ verify_problems($new, "${_}_v") }), '', "hannoy_verify after the crash: ${_}_v")
  for qw(items more late);
# the linker, let go, had the replica redo stopped trusting rebuilt from the table
ok(index_used_soon($new, "SELECT id FROM bad ORDER BY v <-> $query LIMIT 10", 'bad_v'),
	'bad_v is rebuilt from the table on the new primary');
answers_exactly($new, 'bad', 'bad_v after its rebuild');
is(join("\n", @{ verify_problems($new, 'bad_v') }), '', 'hannoy_verify finds nothing in bad_v');
is( join("\n",
		@{ HannoyTestUtil::log_problems($new, offset => $offset,
				allow => qr/cannot be used|skipping it|REINDEX|unusable/) }),
	'',
	'the new primary logged no other problem');

############################################################################
# The old primary rejoins with pg_rewind: nothing copied is trusted
############################################################################
my $old = $primary;
# the old primary goes on alone for a while: its WAL diverges from the new timeline
insert_rows($old, 'items', 1500, 1599);
$old->stop;
# pg_rewind copies the source's configuration files too: keep the old node's own
my $conf = PostgreSQL::Test::Utils::slurp_file($old->data_dir . '/postgresql.conf');
command_ok(
	[
		'pg_rewind', '--target-pgdata', $old->data_dir, '--source-server',
		$new->connstr('postgres')
	],
	'pg_rewind brings the old primary onto the new timeline');
ok(-e $old->data_dir . '/backup_label', 'pg_rewind left a backup_label');
open(my $fh, '>', $old->data_dir . '/postgresql.conf') or die $!;
print $fh $conf;
close($fh);
$old->enable_streaming($new);
$old->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$old->start;
is(markers($old), '', 'the rewound server trusts no copied sidecar');
$new->wait_for_catchup($old);
index_unused($old, 'items', 'the rewound standby');
$old->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$old->reload;
ok(index_used_soon($old, "SELECT id FROM items ORDER BY v <-> $query LIMIT 10", 'items_v'),
	'the rewound standby rebuilds items_v from its table');
insert_rows($new, 'items', 1600, 1649);
$new->wait_for_catchup($old);
answers_exactly($old, 'items', 'the rewound standby after its rebuild');
$new->safe_psql('postgres', 'REINDEX INDEX items_v');
$new->wait_for_catchup($old);
wait_until(60, sub { staged_and_tombstones($old, 'items_v') eq '0|0' });
answers_exactly($old, 'items', 'the rewound standby after REINDEX on the new primary');

$old->stop;
$new->stop;
done_testing();
