# VACUUM repairs the graph (DESIGN.md "VACUUM"), on 10,000 Fashion-MNIST
# images built with one thread:
#  - after deleting half the rows (chosen by a fixed hash) and VACUUM,
#    hannoy_verify finds nothing (no dangling link, nothing unreachable),
#    no removed row is ever returned, and recall@10 on the survivors is
#    within 0.01 of a fresh REINDEX;
#  - after deleting every row, VACUUM, and inserting the same rows again,
#    the LMDB pages in use are at most 1.1 times those after the first
#    build (LMDB files never shrink, so used pages are what is compared),
#    and the freed ids were reused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $ROWS = 10_000;
my $QUERIES = 100;

my $node = hannoy_node('vacuum', conf => "hannoy.build_threads = 1\nautovacuum = off");
my $dir = PostgreSQL::Test::Utils::tempdir;
my $train = fashion_images('train', $ROWS);
my $test = fashion_images('t10k', $QUERIES);
my $base = write_copy_file($dir, 'train.copy',
	[ map { [ $_ + 1, vector_literal($train->[$_]) ] } 0 .. $ROWS - 1 ]);
my $queries = write_copy_file($dir, 'queries.copy',
	[ map { [ $_ + 1, vector_literal($test->[$_]) ] } 0 .. $QUERIES - 1 ]);

$node->safe_psql('postgres', qq{
	CREATE TABLE src (id int, v real[]);
	ALTER TABLE src ALTER v SET STORAGE PLAIN;
	COPY src FROM '$base';
	CREATE TABLE q (qid int, v real[]);
	COPY q FROM '$queries';
	CREATE TABLE fm (id int, v real[]);
	ALTER TABLE fm ALTER v SET STORAGE PLAIN;
	INSERT INTO fm SELECT * FROM src;
	CREATE INDEX fm_v ON fm USING hannoy (v);});

# recall@10 of the index on table fm for the test images against an exact
# scan of fm as it is now (a hit is a row no farther than the true 10th)
sub recall
{
	$node->safe_psql('postgres', q{
		DROP TABLE IF EXISTS truth;
		SET enable_indexscan = off;
		CREATE TABLE truth AS
		  SELECT q.qid, (SELECT max(d) FROM (SELECT f.v <-> q.v AS d FROM fm f
		                                      ORDER BY f.v <-> q.v LIMIT 10) x) AS kth
		    FROM q;});
	my $sql = q{
		SELECT sum(CASE WHEN a.d <= t.kth THEN 1 ELSE 0 END)::float8 / count(*)
		  FROM q JOIN truth t USING (qid)
		  CROSS JOIN LATERAL (SELECT f.v <-> q.v AS d FROM fm f
		                       ORDER BY f.v <-> q.v LIMIT 10) a};
	my $plan = $node->safe_psql('postgres', "SET enable_seqscan = off; EXPLAIN (COSTS OFF) $sql");
	like($plan, qr/Index Scan using fm_v/, 'recall is measured through the index');
	return $node->safe_psql('postgres', "SET enable_seqscan = off; $sql");
}

sub stat_of
{
	my ($col) = @_;
	return $node->safe_psql('postgres', "SELECT $col FROM hannoy_index_stats('fm_v')");
}

############################################################################
# Half the rows deleted, VACUUM, compared with a fresh REINDEX.
############################################################################
$node->safe_psql('postgres', 'DELETE FROM fm WHERE hashint4(id) % 2 = 0; VACUUM fm;');
my $survivors = $node->safe_psql('postgres', 'SELECT count(*) FROM fm');
note("survivors: $survivors of $ROWS");
is(stat_of('tombstones'), '0', 'VACUUM leaves no tombstone');
is(stat_of('free_ids'), $ROWS - $survivors, 'the removed rows\' ids are free');
is($node->safe_psql('postgres', "SELECT count(*) FROM hannoy_verify('fm_v')"), '0',
	'hannoy_verify finds nothing after the repair');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT count(*) FROM (SELECT id FROM fm ORDER BY v <-> (SELECT v FROM q WHERE qid = 1)) s
	 WHERE hashint4(id) % 2 = 0}), '0', 'no removed row is returned by an unbounded scan');
my $repaired = recall();

$node->safe_psql('postgres', 'REINDEX INDEX fm_v');
my $fresh = recall();
diag(sprintf('recall@10 on survivors: after VACUUM %.4f, after REINDEX %.4f', $repaired, $fresh));
cmp_ok($repaired, '>=', $fresh - 0.01, 'recall after VACUUM is within 0.01 of a fresh REINDEX');

############################################################################
# Everything deleted, VACUUM, the same rows inserted again.
############################################################################
$node->safe_psql('postgres', 'TRUNCATE fm; INSERT INTO fm SELECT * FROM src; REINDEX INDEX fm_v;');
my $pages_built = stat_of('lmdb_pages');
my $next_built = stat_of('next_id');
$node->safe_psql('postgres', 'DELETE FROM fm; VACUUM fm;');
is(stat_of('live_items'), '0', 'VACUUM after deleting everything leaves no live item');
$node->safe_psql('postgres', 'INSERT INTO fm SELECT * FROM src;');
my $pages_refilled = stat_of('lmdb_pages');
diag("LMDB pages: $pages_built after the build, $pages_refilled after delete-all, VACUUM, refill");
cmp_ok($pages_refilled, '<=', 1.1 * $pages_built, 'pages in use stay within 1.1x of the build');
is(stat_of('next_id'), $next_built, 'the refill reused every freed id');
is($node->safe_psql('postgres', "SELECT count(*) FROM hannoy_verify('fm_v')"), '0',
	'hannoy_verify finds nothing after the refill');
my ($idx) = scan_ids($node, 'fm', 'index', query => "(SELECT v FROM q WHERE qid = 1)");
my ($seq) = scan_ids($node, 'fm', 'seq');
compare_id_sets($idx, $seq, 'unbounded index scan equals a sequential scan after the refill');

$node->stop;
done_testing();
