# The dirty marker (DESIGN.md "The dirty marker"): a sidecar whose writes
# may not have reached the disk when the operating system stopped is rebuilt
# from its table, on a primary and with no REINDEX:
#  - while a backend inserts, the sidecar holds a marker with this boot's
#    id; once the server has stopped cleanly none is left;
#  - a marker with another boot id (what a power loss leaves) found at
#    start-up: the index is not used (a forced scan fails rather than
#    answer from a sidecar that may be torn), the rebuild runs (slowed by
#    hannoy.test_rebuild_delay) while the table takes inserts, updates,
#    deletes and VACUUM, then the index is used and answers exactly, also
#    after more writes and a restart; hannoy_verify finds nothing wrong;
#  - a marker of this boot whose process is gone (what kill -9 leaves) is
#    cleared at start-up, without a rebuild.
# HANNOY_DIRTY_ROWS sets the table's size (default 3000).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HannoyTestUtil;

my $rows = $ENV{HANNOY_DIRTY_ROWS} // 3000;
die "HANNOY_DIRTY_ROWS must be an integer of at least 1000" unless $rows =~ /^\d+$/ && $rows >= 1000;

# fsync on: a sidecar that is never synced has no marker
my $node = hannoy_node('primary', conf => "autovacuum = off\nfsync = on");
my $dims = 12;
my $vectors = seeded_vectors($rows + 1000, $dims, 47);
my $query = "'" . vector_literal(seeded_vectors(1, $dims, 49)->[0]) . "'::real[]";

# SQL inserting rows $from..$to of the seeded vectors.
sub insert_sql
{
	my ($from, $to) = @_;
	return "INSERT INTO items VALUES "
	  . join(',', map { "($_, '" . vector_literal($vectors->[$_]) . "')" } $from .. $to)
	  . ";\n";
}

$node->safe_psql('postgres',
	"CREATE TABLE items (id int PRIMARY KEY, v real[]);\n"
	  . insert_sql(0, $rows - 1)
	  . "CREATE INDEX items_v ON items USING hannoy (v real_l2_ops) WITH (m = 8, ef_construction = 64);");
my $next = $rows;
my ($dir) = sidecar_dirs($node);
my $sidecar = $node->data_dir . "/hannoy/$dir";

# The dirty markers in the sidecar.
sub markers
{
	opendir(my $dh, $sidecar) or return ();
	my @m = sort grep { /^dirty\./ } readdir($dh);
	closedir($dh);
	return @m;
}

my $boot = PostgreSQL::Test::Utils::slurp_file('/proc/sys/kernel/random/boot_id');
chomp $boot;

############################################################################
# A writer's marker holds this boot's id, and a clean stop leaves none
############################################################################
my $writer = $node->background_psql('postgres');
$writer->query_safe('BEGIN');
$writer->query_safe(insert_sql($next, $next + 9));
$next += 10;
# the queue is applied before a scan of the index in the same transaction
$writer->query_safe("SET enable_seqscan = off; SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> $query LIMIT 5) s");
my @during = markers();
is(scalar(@during), 1, 'a backend that wrote to the sidecar left its marker');
is(PostgreSQL::Test::Utils::slurp_file("$sidecar/$during[0]"), "$boot\n",
	'the marker holds this boot\'s id') if @during;
$writer->query_safe('COMMIT');
$writer->quit;
$node->stop;
is(join(',', markers()), '', 'a clean stop leaves no marker');

############################################################################
# A marker of this boot whose process is gone is cleared without a rebuild
############################################################################
# a process id that cannot be running: above the kernel's limit
my $pid_max = PostgreSQL::Test::Utils::slurp_file('/proc/sys/kernel/pid_max');
chomp $pid_max;
my $gone = $pid_max + 1;
PostgreSQL::Test::Utils::append_to_file("$sidecar/dirty.$gone.0", "$boot\n");
my $offset = -s $node->logfile;
$node->start;
ok(index_used_soon($node, "SELECT id FROM items ORDER BY v <-> $query LIMIT 10", 'items_v'),
	'after a process crash\'s marker the index is used at once');
is(join(',', markers()), '', 'and the marker of the dead process is gone');
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset), qr/rebuilding index/,
	'nothing was rebuilt');

############################################################################
# A marker of another boot: the index is rebuilt from the table at start-up
############################################################################
$node->stop;
PostgreSQL::Test::Utils::append_to_file("$sidecar/dirty.4242.0",
	"00000000-0000-4000-8000-000000000000\n");
$node->append_conf('postgresql.conf', 'hannoy.test_rebuild_delay = 4000');
$offset = -s $node->logfile;
$node->start;
my $exact_top = "SELECT id, v <-> $query FROM items ORDER BY v <-> $query LIMIT 10";
my $seq_top = "SET enable_indexscan = off; SET enable_bitmapscan = off; $exact_top";
my ($rc, $sout, $serr) = $node->psql('postgres', "SET enable_seqscan = off; $exact_top");
like($serr, qr/hannoy index "items_v" cannot be used: its sidecar (may be torn|is being rebuilt)/,
	'a forced scan of the index fails rather than answer from a sidecar that may be torn');
ok( wait_until(
		60,
		sub {
			PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset) =~
			  /hannoy is rebuilding index "items_v" from its table/;
		}),
	'the rebuild starts');
my $written_from = $next;
$node->safe_psql('postgres',
	insert_sql($next, $next + 199)
	  . "UPDATE items SET v = (SELECT v FROM items i2 WHERE i2.id = items.id + 1) "
	  . "WHERE id % 37 = 5 AND id < $rows;\n"
	  . "DELETE FROM items WHERE id % 29 = 3;\nVACUUM items;\n");
$next += 200;
($rc, $sout, $serr) = $node->psql('postgres', "SET enable_seqscan = off; $exact_top");
like($serr, qr/being rebuilt from the table/,
	'after those writes the rebuild still runs: a forced scan fails');
unlike($node->safe_psql('postgres', "EXPLAIN (COSTS OFF) $exact_top"),
	qr/Index Scan using items_v/, 'the planner does not use the index meanwhile');
is($node->safe_psql('postgres', $exact_top), $node->safe_psql('postgres', $seq_top),
	'and the query answers exactly without it');
ok( wait_until(
		120,
		sub {
			PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset) =~
			  /hannoy rebuilt index "items_v" from its table: \d+ rows read/;
		}),
	'the rebuild ends');
ok(index_used_soon($node, "SELECT id FROM items ORDER BY v <-> $query LIMIT 10", 'items_v'),
	'then the index is used, with no REINDEX');
is(scalar(grep { /^dirty\.4242\./ } markers()), 0, 'the other boot\'s marker went with the old sidecar');

# The checks against the table.
sub answers_exactly
{
	my ($label) = @_;
	my ($got) = scan_ids($node, 'items', 'index', query => $query, op => '<->');
	my ($want) = scan_ids($node, 'items', 'seq');
	compare_id_sets($got, $want, "$label: the unbounded index scan returns every row");
	is( $node->safe_psql('postgres',
			"SET hannoy.ef_search = 1000; SET enable_seqscan = off; $exact_top"),
		$node->safe_psql('postgres', $seq_top),
		"$label: the top 10 at the widest search equal the exact top 10");
	my ($misses) = self_lookup_misses($node, 'items', where => "id >= $written_from",
		settings => 'SET enable_seqscan = off; SET hannoy.ef_search = 200;');
	is(join(',', @$misses), '', "$label: every recent row finds itself among its 10 nearest");
}
answers_exactly('after the rebuild');
$node->safe_psql('postgres',
	insert_sql($next, $next + 99) . "DELETE FROM items WHERE id % 31 = 4;\nVACUUM items;\n");
$next += 100;
answers_exactly('after more writes and VACUUM');
is_deeply(verify_problems($node, 'items_v'), [], 'hannoy_verify finds nothing wrong');
$node->restart;
ok(index_used_soon($node, "SELECT id FROM items ORDER BY v <-> $query LIMIT 10", 'items_v'),
	'after a restart the index is still used');
answers_exactly('after a restart');
is( join("\n",
		@{ HannoyTestUtil::log_problems($node, allow => qr/cannot be used|test_rebuild_delay/) }),
	'',
	'the server logged no other problem');

$node->stop;
done_testing();
