# A hot standby rebuilds from its own table the hannoy indexes it cannot
# trust (DESIGN.md "Rebuilding a replica from the table"), with no REINDEX
# anywhere:
#  - a standby made with pg_basebackup while inserts, updates, deletes,
#    VACUUM with repair and a REINDEX run on the primary: once its rebuild
#    ends it uses the indexes that existed before its backup (EXPLAIN shows
#    the index scan), an unbounded index scan returns exactly the seq-scan
#    rows, the top 10 at the widest search are the exact top 10, every
#    recent row finds itself among its 10 nearest, and it has the primary's
#    sidecars and no more; the same after more writes on the primary, while
#    the replica linker links the staged rows;
#  - the rebuild waits while the linker is paused (hannoy.test_pause_linker):
#    meanwhile the copied indexes are not used and a forced scan fails
#    rather than answer wrongly;
#  - a record redo cannot apply (hannoy.test_fail_redo): the standby stays
#    up, and once the failure has passed the index is rebuilt and exact;
#  - rows a transaction in progress inserted are rebuilt too; when it
#    aborts and VACUUM truncates its pages away, scans never fetch them;
#  - an expression index is rebuilt; a partial index is not (never used
#    there, and its table answered exactly without it);
#  - a standby stopped in immediate mode while a rebuild may run: after the
#    restart the rebuild is done again and the answers are exact;
#  - a promotion while a rebuild runs (slowed by hannoy.test_rebuild_delay):
#    the rebuild goes on on the new primary while it inserts, updates,
#    deletes and vacuums; meanwhile the half-built index is not used (a
#    forced scan fails) and answers stay exact; then the index is used with
#    no REINDEX and answers exactly, also after more writes and a restart.
# HANNOY_REBUILD_ROWS sets the table's size (default 3000).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $rows = $ENV{HANNOY_REBUILD_ROWS} // 3000;
die "HANNOY_REBUILD_ROWS must be an integer of at least 1000" unless $rows =~ /^\d+$/ && $rows >= 1000;

my $primary = hannoy_node('primary',
	conf => "wal_level = replica\nmax_wal_senders = 4\nautovacuum = off");
$primary->append_conf('pg_hba.conf', 'local replication all trust');
$primary->reload;

my $dims = 12;
my $vectors = seeded_vectors($rows + 2000, $dims, 41);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 43)->[0]) . "'::real[]";

# SQL inserting rows $from..$to of the seeded vectors into $table.
sub insert_sql
{
	my ($table, $from, $to) = @_;
	return "INSERT INTO $table VALUES "
	  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to)
	  . ";\n";
}

# The distance operator of $table's index: items is l2, the others cosine.
sub op_of
{
	my ($table) = @_;
	return $table eq 'items' ? '<->' : '<=>';
}

# Waits until $node's planner uses index $index for an ordered scan of $table.
sub table_index_used_soon
{
	my ($node, $table, $index) = @_;
	my $op = op_of($table);
	return index_used_soon($node, "SELECT id FROM $table ORDER BY v $op $query LIMIT 10", $index);
}

my $standby;

# Makes the standby stop trusting items_v's replica: the linker paused (so
# nothing rebuilds it yet) and redo failing (hannoy.test_fail_redo) until a
# record of items_v fails; then redo works again, the linker stays paused.
my $next = $rows + 1300;
sub distrust_items
{
	my ($label) = @_;
	$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
	$standby->reload;
	# a rebuild worker the linker started before (for another index) would rebuild it at once
	ok( wait_until(
			60,
			sub {
				$standby->safe_psql('postgres',
					"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hannoy replica rebuild'"
				) eq '0';
			}),
		"no rebuild worker runs $label" =~ s/ $//r);
	$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = on');
	$standby->reload;
	my $offset = -s $standby->logfile;
	ok( wait_until(
			30,
			sub {
				$primary->safe_psql('postgres', insert_sql('items', $next, $next));
				$next++;
				$primary->wait_for_catchup($standby);
				return PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
				  /could not replay a hannoy WAL record/;
			}),
		"redo fails on a record of items_v $label" =~ s/ $//r);
	$standby->append_conf('postgresql.conf', 'hannoy.test_fail_redo = off');
	$standby->reload;
}

# Inserts the next $n rows of the seeded vectors into items on the primary.
sub insert_next
{
	my ($n) = @_;
	$primary->safe_psql('postgres', insert_sql('items', $next, $next + $n - 1));
	$next += $n;
}

# The checks of the acceptance list on $node for $table (index ${table}_v).
sub answers_exactly
{
	my ($node, $table, $label, %o) = @_;
	my $op = op_of($table);
	my ($got) = scan_ids($node, $table, 'index', query => $query, op => $op);
	my ($want) = scan_ids($node, $table, 'seq');
	compare_id_sets($got, $want, "$label: the unbounded index scan returns every row");
	my $top = "SELECT id, v $op $query FROM $table ORDER BY v $op $query LIMIT 10";
	is( $node->safe_psql('postgres',
			"SET hannoy.ef_search = 1000; SET enable_seqscan = off; $top"),
		$primary->safe_psql('postgres',
			"SET enable_indexscan = off; SET enable_bitmapscan = off; $top"),
		"$label: the top 10 at the widest search equal the exact top 10");
	if (defined $o{recent})
	{
		my ($misses) = self_lookup_misses($node, $table, where => $o{recent},
			settings => 'SET enable_seqscan = off; SET hannoy.ef_search = 200;');
		is(join(',', @$misses), '', "$label: every recent row finds itself among its 10 nearest");
	}
}

for my $t (qw(items other third))
{
	$primary->safe_psql('postgres', "CREATE TABLE $t (id int PRIMARY KEY, v real[])");
	$primary->safe_psql('postgres', insert_sql($t, 0, $rows - 1));
}
$primary->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v real_l2_ops)');
$primary->safe_psql('postgres',
	'CREATE INDEX other_v ON other USING hannoy (v real_cosine_ops) WITH (quantizer = scalar8)');
$primary->safe_psql('postgres',
	'CREATE INDEX third_v ON third USING hannoy (v real_cosine_ops) '
	  . "WITH (quantizer = binary, rerank = heap)");
# a partial index: never rebuilt (DESIGN.md), so never used on the standby
$primary->safe_psql('postgres', 'CREATE TABLE part (id int PRIMARY KEY, v real[])');
$primary->safe_psql('postgres', insert_sql('part', 0, 999));
$primary->safe_psql('postgres',
	'CREATE INDEX part_v ON part USING hannoy (v real_l2_ops) WHERE id % 3 <> 0');
# an expression index: the rebuild computes its keys as a build does
$primary->safe_psql('postgres',
	'CREATE INDEX part_e ON part USING hannoy ((v || 1::real) real_l2_ops)');

############################################################################
# A base backup taken while the primary writes
############################################################################
my $script = $primary->basedir . '/load.sql';
my $sql = '';
for my $batch (0 .. 39)
{
	my $first = $rows + $batch * 25;
	$sql .= insert_sql('items', $first, $first + 24);
	$sql .= insert_sql('other', $first, $first + 24);
	$sql .= insert_sql('third', $first, $first + 24);
	$sql .= "DELETE FROM third WHERE id % 197 = $batch AND id < $first;\n";
	$sql .= "VACUUM third;\n" if $batch % 10 == 5;
	$sql .= "UPDATE items SET v = v WHERE id % 17 = $batch % 17;\n";
	$sql .= "DELETE FROM items WHERE id % 191 = $batch AND id < $first;\n";
	$sql .= "DELETE FROM other WHERE id % 193 = $batch AND id < $first;\n";
	$sql .= "VACUUM items;\n" if $batch % 8 == 7;
	$sql .= "REINDEX INDEX other_v;\n" if $batch == 20;
	$sql .= "SELECT pg_sleep(0.05);\n";
}
PostgreSQL::Test::Utils::append_to_file($script, $sql);
my ($h, $out, $err) = run_psql_script($primary, $script);
$primary->backup('base');
$h->finish;
is($$err, '', 'the write load ran without error');
$primary->safe_psql('postgres', 'VACUUM items; VACUUM other; VACUUM third');

$standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
# the linker paused: the copies are there, untrusted, nothing rebuilt yet
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$standby->start;
$primary->wait_for_catchup($standby);
# other_v's REINDEX may have come after the backup began: its replica is kept from WAL
my $items_dir = '1663_' . $primary->safe_psql('postgres',
	"SELECT d.oid || '_' || pg_relation_filenode('items_v') FROM pg_database d "
	  . "WHERE d.datname = 'postgres'");
ok(-d $standby->data_dir . "/hannoy/$items_dir", 'the base backup copied items_v\'s sidecar');
ok(!-e $standby->data_dir . "/hannoy/$items_dir/replica", 'which the standby does not trust');
unlike(
	$standby->safe_psql('postgres',
		"EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> $query LIMIT 10"),
	qr/Index Scan using items_v/,
	'the copied index is not used before its rebuild');
my ($rc, $sout, $serr) = $standby->psql('postgres',
	"SET enable_seqscan = off; SELECT id FROM items ORDER BY v <-> $query LIMIT 10");
like($serr, qr/hannoy index "items_v" cannot be used/,
	'a forced scan fails rather than answer wrongly');

############################################################################
# The rebuild, while the primary goes on writing
############################################################################
my $offset = -s $standby->logfile;
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
$primary->safe_psql('postgres',
	insert_sql('items', $rows + 1000, $rows + 1099)
	  . "DELETE FROM items WHERE id % 29 = 3;\nVACUUM items;\n");
ok(table_index_used_soon($standby, 'items', 'items_v'), 'the standby uses items_v once it is rebuilt');
ok(table_index_used_soon($standby, 'other', 'other_v'), 'and other_v');
ok(table_index_used_soon($standby, 'third', 'third_v'), 'and third_v (1-bit codes, re-ranked from the heap)');
like(PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset),
	qr/hannoy rebuilt index "items_v" from its table during recovery: \d+ rows read/,
	'the rebuild is logged');
$primary->wait_for_catchup($standby);
answers_exactly($standby, 'items', 'rebuilt', recent => "id >= $rows");
answers_exactly($standby, 'other', 'rebuilt, REINDEXed on the primary during the backup');
answers_exactly($standby, 'third', 'rebuilt, 1-bit codes re-ranked from the heap');
my $expr_sql = "SELECT id FROM part ORDER BY (v || 1::real) <-> ($query || 1::real)";
ok( wait_until(
		120,
		sub {
			$standby->safe_psql('postgres', "EXPLAIN (COSTS OFF) $expr_sql LIMIT 10") =~
			  /Index Scan using part_e on part/;
		}),
	'and part_e (an expression)');
is( $standby->safe_psql('postgres',
		"SET enable_seqscan = off; SET hannoy.ef_search = 1000; $expr_sql LIMIT 10"),
	$primary->safe_psql('postgres',
		"SET enable_indexscan = off; SET enable_bitmapscan = off; $expr_sql LIMIT 10"),
	'the rebuilt expression index\'s top 10 equal the exact top 10');
my $part_sql = "SELECT id FROM part WHERE id % 3 <> 0 ORDER BY v <-> $query";
unlike($standby->safe_psql('postgres', "EXPLAIN (COSTS OFF) $part_sql LIMIT 10"),
	qr/Index Scan using part_v/, 'the partial index part_v is not rebuilt, nor used');
is( join(',', sort { $a <=> $b } split /\n/, $standby->safe_psql('postgres', $part_sql)),
	join(',', sort { $a <=> $b } split /\n/,
		$primary->safe_psql('postgres', 'SELECT id FROM part WHERE id % 3 <> 0')),
	'and its table is answered exactly without it');

is(join(',', sidecar_dirs($standby)), join(',', sidecar_dirs($primary)),
	'the standby has the primary\'s sidecars, no more');

# more writes: staged, linked by the linker, exact throughout
$primary->safe_psql('postgres',
	insert_sql('items', $rows + 1100, $rows + 1299)
	  . "UPDATE items SET v = v WHERE id % 31 = 5;\nDELETE FROM items WHERE id % 37 = 1;\n"
	  . "VACUUM items;\n");
$primary->wait_for_catchup($standby);
answers_exactly($standby, 'items', 'after more writes', recent => "id >= $rows + 1100");
ok( wait_until(
		120,
		sub {
			$standby->safe_psql('postgres',
				"SELECT staged_rows || '|' || tombstones FROM hannoy_index_stats('items_v')") eq
			  '0|0';
		}),
	'the linker links every staged row and repairs every removal');
answers_exactly($standby, 'items', 'linked');

############################################################################
# A record redo cannot apply: the index is rebuilt once the failure passed
############################################################################
distrust_items('');
unlike(
	$standby->safe_psql('postgres',
		"EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> $query LIMIT 10"),
	qr/Index Scan using items_v/,
	'the index is not used after the failure');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
insert_next(50);
ok(table_index_used_soon($standby, 'items', 'items_v'), 'the standby stays up and rebuilds items_v');
$primary->wait_for_catchup($standby);
answers_exactly($standby, 'items', 'rebuilt after a failed redo', recent => "id >= $rows + 1300");

############################################################################
# Rows of a transaction in progress during the rebuild, which then aborts
# and whose pages VACUUM truncates away
############################################################################
distrust_items('again');
$offset = -s $standby->logfile;
my $blocks_before = $primary->safe_psql('postgres',
	"SELECT pg_relation_size('items') / current_setting('block_size')::int");
my $tx = $primary->background_psql('postgres');
$tx->query_safe('BEGIN');
$tx->query_safe(
	"INSERT INTO items SELECT 100000 + g, (SELECT array_agg(((g * 7 + d) % 101) / 50.0 - 1)::real[] "
	  . "FROM generate_series(1, $dims) d) FROM generate_series(1, 2000) g");
# up to the insert position: the tail of an open transaction's WAL may not be written yet
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
my $committed = $standby->safe_psql('postgres',
	'SET enable_indexscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM items');
# the rebuild reads the rows of the transaction in progress
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
ok(table_index_used_soon($standby, 'items', 'items_v'), 'rebuilt while a transaction inserts');
my ($read) = PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
  /hannoy rebuilt index "items_v" from its table during recovery: (\d+) rows read/;
cmp_ok($read // 0, '>=', $committed + 2000,
	'the rebuild read the rows of the transaction in progress too');
$tx->query_safe('ROLLBACK');
$tx->quit;
$primary->safe_psql('postgres', 'VACUUM items');
my $blocks_after = $primary->safe_psql('postgres',
	"SELECT pg_relation_size('items') / current_setting('block_size')::int");
cmp_ok($blocks_after, '<=', $blocks_before, 'VACUUM truncated the aborted rows\' pages away');
$primary->wait_for_catchup($standby);
answers_exactly($standby, 'items', 'after the aborted rows were truncated away');

############################################################################
# An immediate stop while the rebuild may run
############################################################################
# made untrusted again (a failed redo), then stopped at once after the linker is let go
distrust_items('before the immediate stop');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
insert_next(100);
$standby->stop('immediate');
$standby->start;
$primary->safe_psql('postgres', "DELETE FROM items WHERE id % 41 = 2;\nVACUUM items;\n");
ok(table_index_used_soon($standby, 'items', 'items_v'), 'after the immediate stop items_v is used');
$primary->wait_for_catchup($standby);
answers_exactly($standby, 'items', 'after an immediate stop during a rebuild',
	recent => "id >= $rows + 1300");
is( join("\n",
		@{ HannoyTestUtil::log_problems($standby,
				allow => qr/terminating walreceiver process|could not replay a hannoy WAL record|no longer kept from WAL|test_fail_redo|cannot be used/) }),
	'',
	'the standby logged no other problem');

############################################################################
# A promotion while a rebuild runs: the rebuild goes on on the new primary,
# whose inserts, updates, deletes and VACUUM meanwhile are staged or
# recorded; the index is never used half built, and once the rebuild ends
# it is the new primary's own, exact, with no REINDEX
############################################################################
distrust_items('before a promotion');
$standby->append_conf('postgresql.conf', 'hannoy.test_rebuild_delay = 4000');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$offset = -s $standby->logfile;
$standby->reload;
ok( wait_until(
		60,
		sub {
			PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
			  /hannoy is rebuilding index "items_v" from its table during recovery/;
		}),
	'a rebuild of items_v runs');
$standby->promote;
ok(wait_until(60, sub { $standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 'f' }),
	'the standby is promoted while the rebuild runs');
my $promoted_from = $next;
# the linker waits, so the rows staged meanwhile are still staged when the rebuild ends
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = on');
$standby->reload;
$standby->safe_psql('postgres',
	insert_sql('items', $next, $next + 199)
	  . "UPDATE items SET v = (SELECT v FROM items i2 WHERE i2.id = items.id + 1) "
	  . "WHERE id % 37 = 5 AND id < $rows;\n"
	  . "DELETE FROM items WHERE id % 29 = 3;\nVACUUM items;\n");
$next += 200;
my $exact_top = "SELECT id, v <-> $query FROM items ORDER BY v <-> $query LIMIT 10";
my $seq_top = "SET enable_indexscan = off; SET enable_bitmapscan = off; $exact_top";
($rc, $sout, $serr) = $standby->psql('postgres', "SET enable_seqscan = off; $exact_top");
like($serr, qr/being rebuilt from the table/,
	'after those writes the rebuild still runs: a forced scan fails rather than answer wrongly');
unlike(
	$standby->safe_psql('postgres',
		"EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> $query LIMIT 10"),
	qr/Index Scan using items_v/,
	'the new primary does not use the half-built index');
is($standby->safe_psql('postgres', $exact_top), $standby->safe_psql('postgres', $seq_top),
	'and answers exactly without it');
ok( wait_until(
		120,
		sub {
			PostgreSQL::Test::Utils::slurp_file($standby->logfile, $offset) =~
			  /hannoy rebuilt index "items_v" from its table: \d+ rows read/;
		}),
	'the rebuild ends on the new primary');
ok(table_index_used_soon($standby, 'items', 'items_v'), 'then the new primary uses items_v');
my ($staged, $tombstones) = split /\|/,
  $standby->safe_psql('postgres', "SELECT staged_rows, tombstones FROM hannoy_index_stats('items_v')");
cmp_ok($staged, '>=', 150, "the new primary's inserts and updates during the rebuild were staged");
cmp_ok($tombstones, '>=', 50,
	'the rows its VACUUM removed during the rebuild left the rebuilt graph as it ended');

# The checks of the acceptance list on the new primary, against its own heap.
sub promoted_answers_exactly
{
	my ($label) = @_;
	my ($got) = scan_ids($standby, 'items', 'index', query => $query, op => '<->');
	my ($want) = scan_ids($standby, 'items', 'seq');
	compare_id_sets($got, $want, "$label: the unbounded index scan returns every row");
	is( $standby->safe_psql('postgres',
			"SET hannoy.ef_search = 1000; SET enable_seqscan = off; $exact_top"),
		$standby->safe_psql('postgres', $seq_top),
		"$label: the top 10 at the widest search equal the exact top 10");
	my ($misses) = self_lookup_misses($standby, 'items', where => "id >= $promoted_from",
		settings => 'SET enable_seqscan = off; SET hannoy.ef_search = 200;');
	is(join(',', @$misses), '', "$label: every recent row finds itself among its 10 nearest");
}
promoted_answers_exactly('after a rebuild that went on past the promotion, rows still staged');
$standby->append_conf('postgresql.conf', 'hannoy.test_pause_linker = off');
$standby->reload;
ok( wait_until(
		60,
		sub {
			$standby->safe_psql('postgres', "SELECT staged_rows FROM hannoy_index_stats('items_v')")
			  eq '0';
		}),
	'the linker links the staged rows');
promoted_answers_exactly('once they are linked');
$standby->safe_psql('postgres',
	insert_sql('items', $next, $next + 99) . "DELETE FROM items WHERE id % 31 = 4;\nVACUUM items;\n");
$next += 100;
promoted_answers_exactly('after more writes and VACUUM on the new primary');
is_deeply(verify_problems($standby, 'items_v'), [], 'hannoy_verify finds nothing wrong');
$standby->restart;
ok(table_index_used_soon($standby, 'items', 'items_v'), 'after a restart items_v is still used');
promoted_answers_exactly('after a restart of the new primary');

$standby->stop;
$primary->stop;
done_testing();
