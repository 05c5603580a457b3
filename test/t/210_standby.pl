# A hot standby that streams from before an index is created keeps that
# index's sidecar from hannoy's WAL records, and its linker moves the staged
# rows into the replica's graph (DESIGN.md "Replication and recovery"):
# after inserts, UPDATE, DELETE, VACUUM, a standby restart, a
# prepared transaction, REINDEX CONCURRENTLY, TRUNCATE, DROP INDEX and DROP
# TABLE on the primary,
#  - the staged rows drain to none, and the graph holds exactly the table's
#    rows with no tombstone left (removals reach linked rows; the repair
#    ran);
#  - an unbounded ordered index scan on the standby returns exactly the
#    rows a sequential scan returns;
#  - every recent row finds itself among its 10 nearest;
#  - the top 10 at a wide ef_search equal the exact top 10, distances too;
#  - the planner uses the index on the standby (EXPLAIN);
#  - the standby keeps no sidecar the primary does not have, also after a
#    COMMIT PREPARED of a DROP INDEX and a ROLLBACK PREPARED of a CREATE
#    INDEX (the standby's sweep), and keeps a prepared CREATE INDEX's;
#  - redo logged no WARNING;
# an index that existed before the standby's base backup is rebuilt there
# from the standby's own table (its copied sidecar is not trusted) and then
# used, exactly; and a record redo cannot apply (hannoy.test_fail_redo)
# leaves the standby up and the index unusable there (a forced scan fails
# rather than answer wrongly) until the standby has rebuilt it from the
# table, which waits while hannoy.test_pause_linker is on.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $primary = hannoy_node('primary',
	conf => "wal_level = replica\nmax_wal_senders = 4\nautovacuum = off\nmax_prepared_transactions = 4");
$primary->append_conf('pg_hba.conf', 'local replication all trust');
$primary->reload;

# a table and index that exist before the base backup: copied, never trusted, rebuilt
my $dims = 12;
my $old = seeded_vectors(200, $dims, 7);
$primary->safe_psql('postgres', 'CREATE TABLE before_backup (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres',
	'INSERT INTO before_backup VALUES '
	  . join(',', map { "($_, '" . vector_literal($old->[$_]) . "')" } 0 .. $#$old));
$primary->safe_psql('postgres',
	'CREATE INDEX before_backup_v ON before_backup USING hannoy (v real_l2_ops)');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;

my $vectors = seeded_vectors(900, $dims, 11);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 99)->[0]) . "'::real[]";

# Inserts rows $from..$to of the seeded vectors into $table.
sub insert_rows
{
	my ($table, $from, $to) = @_;
	$primary->safe_psql('postgres',
		"INSERT INTO $table VALUES "
		  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to));
}

# Waits for the standby's linker to drain the staged rows of index $index
# and repair around every removed row; returns the counters then (live
# graph rows, unindexed rows, staged rows, tombstones).
sub standby_linked
{
	my ($index) = @_;
	my $stats;
	wait_until(
		60,
		sub {
			$stats = $standby->safe_psql('postgres',
				"SELECT live_items, unindexed_rows, staged_rows, tombstones "
				  . "FROM hannoy_index_stats('$index')");
			return $stats =~ /^\d+\|\d+\|0\|0$/;
		});
	return $stats;
}

# Checks on the standby, once it has replayed everything: the linker drains
# the staged rows into the graph, which then holds exactly the table's rows;
# complete index scan = seq scan, top 10 = exact top 10 (ids and
# distances), every recent row (the condition 'recent') finds itself among
# its 10 nearest, the planner's choice, and the sidecar directories.
sub standby_answers_exactly
{
	my ($table, $label, %o) = @_;
	$primary->wait_for_catchup($standby);
	my $rows = $standby->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE v IS NOT NULL) || '|' || count(*) FILTER (WHERE v IS NULL) "
		  . "FROM $table");
	is(standby_linked("${table}_v"), "$rows|0|0",
		"$label: the standby links every row into its graph, none left staged, no tombstone");
	if (defined $o{recent})
	{
		my $ef = $o{ef} // 'DEFAULT';
		my ($misses) = self_lookup_misses($standby, $table, where => $o{recent},
			settings => "SET enable_seqscan = off; SET hannoy.ef_search = $ef;");
		is(join(',', @$misses), '',
			"$label: every recent row finds itself among its 10 nearest (ef_search $ef)");
	}
	my ($got) = scan_ids($standby, $table, 'index', query => $query);
	my ($want) = scan_ids($standby, $table, 'seq');
	compare_id_sets($got, $want, "$label: the standby's unbounded index scan returns every row");

	my $top = "SELECT id, v <-> $query FROM $table ORDER BY v <-> $query LIMIT 10";
	my $idx = $standby->safe_psql('postgres',
		"SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top");
	my $exact = $standby->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $top");
	is($idx, $exact, "$label: the standby's top 10 equal the exact top 10");

	my $plan = $standby->safe_psql('postgres', "EXPLAIN (COSTS OFF) $top");
	like($plan, qr/Index Scan using ${table}_v on $table/,
		"$label: the standby's planner uses the index");

	is(join(',', sidecar_dirs($standby)), join(',', sidecar_dirs($primary)),
		"$label: the standby has the primary's sidecars, no more");
}

############################################################################
# Created after the standby started: built from WAL on the standby.
############################################################################
$primary->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, v real[])');
insert_rows('items', 0, 299);
$primary->safe_psql('postgres', 'INSERT INTO items VALUES (1000, NULL), (1001, NULL)');
$primary->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops)');
standby_answers_exactly('items', 'after CREATE INDEX', recent => 'a.id BETWEEN 0 AND 299');

insert_rows('items', 300, 499);
$primary->safe_psql('postgres', 'INSERT INTO items VALUES (1002, NULL)');
standby_answers_exactly('items', 'after inserts', recent => 'a.id BETWEEN 300 AND 499');

# UPDATE moves rows to new TIDs; DELETE and VACUUM remove the old ones.
# The UPDATE gives 71 rows one identical vector: a graph linked by inserts
# (as every standby's is) then misses a few self-lookups at the default
# ef_search (hannoy_insert alone does too, in the core), and with linking
# interleaved with the replayed removals and the repair a few at 100 now
# and then (see DESIGN.md "Linking on a hot standby"), so the steps that
# follow look recent rows up at ef_search 1000: every one must be linked
# and reachable.
my $dup_ef = 1000;
$primary->safe_psql('postgres',
	"UPDATE items SET v = array_fill(0.5::real, ARRAY[$dims]) WHERE id % 7 = 0");
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 5 = 1');
$primary->safe_psql('postgres', 'VACUUM items');
# a reused heap slot must name its new row's vector on the standby
insert_rows('items', 500, 649);
standby_answers_exactly('items', 'after UPDATE, DELETE, VACUUM and reuse',
	recent => 'a.id BETWEEN 500 AND 649', ef => $dup_ef);

# a restart replays from the last restartpoint: records already applied change nothing
$standby->restart;
insert_rows('items', 650, 699);
standby_answers_exactly('items', 'after a standby restart',
	recent => 'a.id BETWEEN 650 AND 699', ef => $dup_ef);

# rows of a prepared transaction, committed later by another session
$primary->safe_psql('postgres',
	"BEGIN; INSERT INTO items VALUES (1003, '" . vector_literal($vectors->[700]) . "'), (1004, '"
	  . vector_literal($vectors->[701])
	  . "'); PREPARE TRANSACTION 'p1'");
$primary->safe_psql('postgres', "COMMIT PREPARED 'p1'");
standby_answers_exactly('items', 'after a prepared transaction',
	recent => 'a.id IN (1003, 1004)', ef => $dup_ef);

# REINDEX CONCURRENTLY builds a new sidecar, validates with inserts, drops the old one
$primary->safe_psql('postgres', 'REINDEX INDEX CONCURRENTLY items_v');
standby_answers_exactly('items', 'after REINDEX CONCURRENTLY');

# An index that re-ranks from the heap on the primary (no vectors in its
# sidecar): the standby's replica is linked from staged rows with their
# vectors and re-ranks from them, exactly (DESIGN.md "Heap re-ranking").
$primary->safe_psql('postgres', 'CREATE TABLE hq (id int PRIMARY KEY, v real[])');
insert_rows('hq', 0, 299);
$primary->safe_psql('postgres', 'INSERT INTO hq VALUES (1000, NULL)');
$primary->safe_psql('postgres',
	"CREATE INDEX hq_v ON hq USING hannoy (v real_l2_ops) WITH (quantizer = 'binary', rerank = 'heap')");
is($primary->safe_psql('postgres', "SELECT rerank FROM hannoy_index_stats('hq_v')"),
	'heap', 'the primary\'s index keeps no vectors');
standby_answers_exactly('hq', 'heap-reranked index', recent => 'a.id BETWEEN 0 AND 299');
insert_rows('hq', 300, 399);
$primary->safe_psql('postgres', 'DELETE FROM hq WHERE id % 9 = 2; VACUUM hq');
standby_answers_exactly('hq', 'heap-reranked index after inserts, DELETE and VACUUM',
	recent => 'a.id BETWEEN 300 AND 399');
is($standby->safe_psql('postgres', "SELECT rerank FROM hannoy_index_stats('hq_v')"),
	'sidecar', 'the standby\'s replica keeps vectors and re-ranks from them');
$primary->safe_psql('postgres', 'DROP TABLE hq');

############################################################################
# VACUUM's removals reach the standby: heap slots VACUUM freed are reused by
# rows a partial index leaves out, which a stale staged TID would return.
############################################################################
$primary->safe_psql('postgres', 'CREATE TABLE part (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres',
	'CREATE INDEX part_v ON part USING hannoy (v real_l2_ops) WHERE id < 100000');
insert_rows('part', 0, 199);
my $freed = $primary->safe_psql('postgres', 'SELECT array_agg(ctid) FROM part WHERE id % 2 = 0');
$primary->safe_psql('postgres', 'DELETE FROM part WHERE id % 2 = 0');
$primary->safe_psql('postgres', 'VACUUM part');
$primary->safe_psql('postgres',
	"INSERT INTO part SELECT 100000 + id, v FROM part WHERE id < 100000");
$primary->safe_psql('postgres', 'INSERT INTO part SELECT id + 200000, v FROM part WHERE id >= 100000');
my $reused = $primary->safe_psql('postgres',
	"SELECT count(*) FROM part WHERE id >= 100000 AND ctid = ANY('$freed'::tid[])");
cmp_ok($reused, '>', 0, 'rows outside the partial index reuse slots VACUUM freed');
$primary->wait_for_catchup($standby);
{
	my $sql = "SELECT id FROM part WHERE id < 100000 ORDER BY v <-> $query";
	my $plan = $standby->safe_psql('postgres',
		"SET enable_seqscan = off; SET enable_bitmapscan = off; EXPLAIN (COSTS OFF) $sql");
	like($plan, qr/Index Scan using part_v on part/, 'the partial index is used on the standby');
	my @got = split /\n/, $standby->safe_psql('postgres',
		"SET enable_seqscan = off; SET enable_bitmapscan = off; $sql");
	my @want = split /\n/,
	  $standby->safe_psql('postgres', 'SELECT id FROM part WHERE id < 100000');
	compare_id_sets(\@got, \@want,
		'after VACUUM and slot reuse the standby\'s partial index returns exactly its rows');
}

############################################################################
# TRUNCATE, DROP INDEX, DROP TABLE: the standby's sidecars follow.
############################################################################
$primary->safe_psql('postgres', 'TRUNCATE items');
insert_rows('items', 700, 799);
standby_answers_exactly('items', 'after TRUNCATE', recent => 'a.id BETWEEN 700 AND 799');

$primary->safe_psql('postgres', 'CREATE TABLE dropped (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX dropped_v ON dropped USING hannoy (v real_l2_ops)');
insert_rows('dropped', 800, 899);
standby_answers_exactly('dropped', 'a second index', recent => 'a.id BETWEEN 800 AND 899');
$primary->safe_psql('postgres', 'DROP INDEX dropped_v');
$primary->wait_for_catchup($standby);
is(join(',', sidecar_dirs($standby)), join(',', sidecar_dirs($primary)),
	'after DROP INDEX the standby has the primary\'s sidecars, no more');
$primary->safe_psql('postgres', 'DROP TABLE items');
$primary->wait_for_catchup($standby);
is(join(',', sidecar_dirs($standby)), join(',', sidecar_dirs($primary)),
	'after DROP TABLE the standby has the primary\'s sidecars, no more');

# an index created in an aborted transaction leaves nothing on the standby
$primary->safe_psql('postgres',
	'BEGIN; CREATE INDEX aborted_v ON dropped USING hannoy (v real_l2_ops); ROLLBACK');
$primary->wait_for_catchup($standby);
is(join(',', sidecar_dirs($standby)), join(',', sidecar_dirs($primary)),
	'after an aborted CREATE INDEX the standby has the primary\'s sidecars, no more');

# COMMIT PREPARED and ROLLBACK PREPARED log no hannoy drop record (no
# extension code runs for them): the standby's linker sweeps the sidecar
# once redo has unlinked its relation file, and never the sidecar of an
# index a prepared transaction still creates.
sub standby_sidecars_soon
{
	my ($label) = @_;
	$primary->wait_for_catchup($standby);
	my $want;
	my $same = wait_until(
		30,
		sub {
			$want = join(',', expected_sidecar_dirs($standby));
			return join(',', sidecar_dirs($standby)) eq $want;
		});
	ok($same, "$label: the standby keeps one sidecar per index, no more")
	  or diag('have ' . join(',', sidecar_dirs($standby)) . ", want $want");
}
# By name, not by count: a rebuild from the table may be replacing another
# index's sidecar meanwhile.
my %catalog_before = map { $_ => 1 } expected_sidecar_dirs($standby);
$primary->safe_psql('postgres', 'CREATE INDEX prepared_v ON dropped USING hannoy (v real_l2_ops)');
$primary->wait_for_catchup($standby);
my ($prepared_dir) = grep { !$catalog_before{$_} } expected_sidecar_dirs($standby);
my $standby_root = $standby->data_dir . '/hannoy';
ok(defined $prepared_dir && -d "$standby_root/$prepared_dir",
	'the standby has the sidecar of the index about to be dropped');
my $sweep_from = -s $standby->logfile;
$primary->safe_psql('postgres', "BEGIN; DROP INDEX prepared_v; PREPARE TRANSACTION 'drop_v'");
$primary->safe_psql('postgres', "COMMIT PREPARED 'drop_v'");
standby_sidecars_soon('after DROP INDEX and COMMIT PREPARED');
ok(!-d "$standby_root/$prepared_dir", 'the dropped index\'s sidecar is gone');
# the line comes once the lock is released, after the directory went
ok( wait_until(
		30,
		sub {
			PostgreSQL::Test::Utils::slurp_file($standby->logfile, $sweep_from) =~
			  /LOG:  removed hannoy sidecar "[^"]*\Q$prepared_dir\E": its relation file no longer exists/;
		}),
	'the standby logs the removal');

$primary->safe_psql('postgres',
	"BEGIN; CREATE INDEX rolled_back_v ON dropped USING hannoy (v real_l2_ops); "
	  . "PREPARE TRANSACTION 'create_v'");
$primary->wait_for_catchup($standby);
# the uncommitted index's sidecar: the one no index the standby's catalog shows owns
my %catalog = map { $_ => 1 } expected_sidecar_dirs($standby);
my @uncommitted = grep { !$catalog{$_} } sidecar_dirs($standby);
is(scalar(@uncommitted), 1, 'the standby has the sidecar of the index a prepared transaction creates');
# longer than a few rounds of the linker: that sidecar stays
sleep(3);
ok(@uncommitted && -d "$standby_root/$uncommitted[0]", 'and keeps it while the transaction is prepared');
$primary->safe_psql('postgres', "ROLLBACK PREPARED 'create_v'");
standby_sidecars_soon('after CREATE INDEX and ROLLBACK PREPARED');
ok(@uncommitted && !-d "$standby_root/$uncommitted[0]", 'the rolled back index\'s sidecar is gone');
# the primary leaves such leftovers to its own sweep (at the next build, at start-up)
$primary->safe_psql('postgres', 'SELECT hannoy_sweep()');
is(join(',', sidecar_dirs($primary)), join(',', expected_sidecar_dirs($primary)),
	'the primary\'s sweep removes its leftovers of the prepared transactions');

############################################################################
# Copied with the base backup: never trusted, rebuilt from the standby's table.
############################################################################
$primary->safe_psql('postgres',
	"INSERT INTO before_backup VALUES (5000, '" . vector_literal($vectors->[0]) . "')");
$primary->wait_for_catchup($standby);
ok( index_used_soon(
		$standby, "SELECT id FROM before_backup ORDER BY v <-> $query LIMIT 5", 'before_backup_v'),
	'an index copied by the base backup is rebuilt on the standby and used');
standby_answers_exactly('before_backup', 'rebuilt from the table', recent => 'a.id = 5000');

is( join("\n",
		@{ HannoyTestUtil::log_problems($standby, allow => qr/terminating walreceiver process/) }),
	'',
	'the standby logged no problem');

############################################################################
# A record redo cannot apply: the standby stays up and goes on replaying,
# the index becomes unusable there (never wrong) until the standby has
# rebuilt it from its table (the linker paused meanwhile).
############################################################################
$primary->safe_psql('postgres', 'CREATE TABLE inj (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', 'CREATE INDEX inj_v ON inj USING hannoy (v real_l2_ops)');
insert_rows('inj', 0, 99);
standby_answers_exactly('inj', 'before a failed redo');
my $offset = -s $standby->logfile;
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = on');
$standby->reload;
# the startup process takes the setting when it next handles its signals
my $next = 300;
my $failed = wait_until(
	30,
	sub {
		insert_rows('inj', $next, $next);
		$next++;
		$primary->wait_for_catchup($standby);
		return PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
		  /could not replay a hannoy WAL record/;
	});
ok($failed, 'redo reports the record it cannot apply');
like(PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset),
	qr/WARNING:  hannoy sidecar "[^"]+" is no longer kept from WAL/,
	'and stops trusting the replica');
$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = off');
$standby->reload;
insert_rows('inj', 150, 199);
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT count(*) FROM inj'),
	$primary->safe_psql('postgres', 'SELECT count(*) FROM inj'),
	'the standby stays up and goes on replaying');
unlike(
	$standby->safe_psql('postgres',
		"EXPLAIN (COSTS OFF) SELECT id FROM inj ORDER BY v <-> $query LIMIT 10"),
	qr/Index Scan using inj_v/,
	'the planner no longer uses the index on the standby');
my ($rc, $out, $err) = $standby->psql('postgres',
	"SET enable_seqscan = off; SELECT id FROM inj ORDER BY v <-> $query LIMIT 10");
like($err, qr/hannoy index "inj_v" cannot be used/, 'a forced scan fails rather than answer wrongly');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
ok(index_used_soon($standby, "SELECT id FROM inj ORDER BY v <-> $query LIMIT 10", 'inj_v'),
	'the standby rebuilds the index from its table');
standby_answers_exactly('inj', 'rebuilt after the failed redo', recent => 'a.id BETWEEN 150 AND 199');
$primary->safe_psql('postgres', 'REINDEX INDEX inj_v');
standby_answers_exactly('inj', 'after REINDEX on the primary', recent => 'a.id BETWEEN 150 AND 199');

$standby->stop;
$primary->stop;
done_testing();
