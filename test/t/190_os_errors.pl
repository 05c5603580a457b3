# Errors of the operating system are named as they are, and a passing one
# never costs the index (DESIGN.md "Unusable sidecars"):
#  - with the sidecar's directory unreadable (chmod 000) an insert and a
#    scan from a new connection (an open environment keeps its
#    descriptors) fail with "Permission denied"; the index is not marked
#    broken, and after chmod 700 it works and holds every committed row
#    (the row whose insert failed is not in the table);
#  - with the sidecars on a small file system that fills up, the insert
#    that finds no room fails with "No space left on device", and inserts
#    resume once space is freed.  Mounting that file system needs root:
#    scripts/test.sh, run as root (as in CI), mounts a small tmpfs and
#    names it in HANNOY_TEST_SMALL_FS; without it that part is skipped.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('oserrors', conf => 'autovacuum = off');
my $query = "'{0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8}'";

# Fills $table with $rows seeded 8-d rows and a hannoy index on them.
sub make_table
{
	my ($n, $table, $rows) = @_;
	my $vecs = seeded_vectors($rows, 8, 19);
	my $values = join(',', map { sprintf("(%d, '%s')", $_ + 1, vector_literal($vecs->[$_])) } 0 .. $rows - 1);
	$n->safe_psql('postgres', "CREATE TABLE $table (id int, v real[]); INSERT INTO $table VALUES $values;"
		  . " CREATE INDEX ${table}_v ON $table USING hannoy (v);");
}

# The sidecar directory of index $index.
sub sidecar_of
{
	my ($n, $index) = @_;
	my $name = $n->safe_psql('postgres', qq{
		SELECT format('%s_%s_%s', d.dattablespace, d.oid, pg_relation_filenode('$index'))
		  FROM pg_database d WHERE d.datname = current_database()});
	return $n->data_dir . "/hannoy/$name";
}

# Checks that an unbounded index scan of $table returns what a sequential
# scan returns.
sub index_equals_heap
{
	my ($n, $table, $what, $q) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($idx) = scan_ids($n, $table, 'index', query => $q // $query);
	my ($seq) = scan_ids($n, $table, 'seq');
	compare_id_sets($idx, $seq, "$what: an unbounded index scan equals a sequential scan");
}

############################################################################
# Permission denied.
############################################################################
make_table($node, 'perm', 300);
my $dir = sidecar_of($node, 'perm_v');
# this connection opens the sidecar and keeps it open across the chmod
my $held = $node->background_psql('postgres');
$held->query_safe("SET enable_seqscan = off; SELECT id FROM perm ORDER BY v <-> $query LIMIT 3");

chmod 0000, $dir or die "chmod $dir: $!";

my ($ret, $out, $err) = $node->psql('postgres', "INSERT INTO perm VALUES (1001, $query)");
isnt($ret, 0, 'an insert into the index with an unreadable sidecar fails');
like($err, qr/ERROR:.*perm_v.*Permission denied/, 'the error names the index and says "Permission denied"');
unlike($err, qr/missing|REINDEX/, 'it does not call the sidecar missing or ask for REINDEX');

($ret, $out, $err) = $node->psql('postgres',
	"SET enable_seqscan = off; SELECT id FROM perm ORDER BY v <-> $query LIMIT 5");
isnt($ret, 0, 'a scan from a new connection fails');
like($err, qr/ERROR:.*perm_v.*Permission denied/, 'with "Permission denied"');

($ret, $out, $err) = $node->psql('postgres', 'DELETE FROM perm WHERE id <= 5; VACUUM perm');
like($err, qr/perm_v.*Permission denied/, 'VACUUM names the cause too');

($ret, $out, $err) = $node->psql('postgres', "SELECT kind FROM hannoy_verify('perm_v')");
like($err, qr/ERROR:.*perm_v.*Permission denied/, 'hannoy_verify fails with "Permission denied"');
unlike($out, qr/sidecar missing/, 'and does not call the sidecar missing');

chmod 0700, $dir or die "chmod $dir: $!";

is($node->safe_psql('postgres', 'SELECT count(*) FROM perm WHERE id = 1001'), '0',
	'the row whose insert failed is not in the table');
$node->safe_psql('postgres', "INSERT INTO perm VALUES (1002, $query); VACUUM perm");
like($node->safe_psql('postgres',
		"EXPLAIN (COSTS OFF) SELECT id FROM perm ORDER BY v <-> $query LIMIT 5"),
	qr/Index Scan using perm_v/, 'after chmod 700 the planner uses the index');
index_equals_heap($node, 'perm', 'after chmod 700');
is($node->safe_psql('postgres',
		"SET enable_seqscan = off; SELECT id FROM perm ORDER BY v <-> $query LIMIT 1"),
	'1002', 'the row inserted afterwards is found first');
is_deeply(verify_problems($node, 'perm_v'), [], 'hannoy_verify finds nothing wrong');
$held->query_safe('SELECT 1');
$held->quit;

############################################################################
# No space left on device.
############################################################################
SKIP:
{
	my $small = $ENV{HANNOY_TEST_SMALL_FS};
	skip 'no small file system to fill: HANNOY_TEST_SMALL_FS is set by scripts/test.sh run as root', 6
	  unless defined $small && -d $small && -w $small;

	# a node whose sidecars all live on the small file system
	my $full = PostgreSQL::Test::Cluster->new('fullfs');
	$full->init;
	$full->append_conf('postgresql.conf', "shared_preload_libraries = 'hannoy'\njit = off\nautovacuum = off");
	mkdir "$small/hannoy" or die "mkdir $small/hannoy: $!";
	symlink("$small/hannoy", $full->data_dir . '/hannoy') or die "symlink: $!";
	$full->start;
	$full->safe_psql('postgres', 'CREATE EXTENSION hannoy');
	$full->safe_psql('postgres', q{
		CREATE TABLE big (id int, v real[]);
		CREATE INDEX big_v ON big USING hannoy (v);
		CREATE TABLE ballast (b bytea)});
	my $bdir = sidecar_of($full, 'big_v');

	# fill the file system to a few hundred KiB with a ballast file
	my $ballast = "$small/ballast";
	open(my $fh, '>', $ballast) or die "cannot write $ballast: $!";
	my $chunk = "\0" x 65536;
	while (1)
	{
		my $free = `df -B1 --output=avail '$small' | tail -n 1` + 0;
		last if $free < 512 * 1024;
		print $fh $chunk or last;
		$fh->flush;
	}
	close($fh);

	# insert 256-d rows in batches until one fails
	my ($failed, $batch, $message) = (0, 0, '');
	while ($batch < 200)
	{
		my $first = $batch * 100 + 1;
		($ret, $out, $err) = $full->psql('postgres', qq{
			INSERT INTO big SELECT i, ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, 256) WHERE i > 0)
			  FROM generate_series($first, $first + 99) i});
		$batch++;
		if ($ret != 0)
		{
			$failed = 1;
			$message = $err;
			last;
		}
	}
	ok($failed, "an insert fails once the file system is full (after $batch batches)");
	like($message, qr/ERROR:.*big_v.*No space left on device/, 'the error says "No space left on device"')
	  or diag($message);
	unlike($message, qr/Input\/output error/, 'not "Input/output error"');

	unlink $ballast or die "unlink $ballast: $!";
	my $before = $full->safe_psql('postgres', 'SELECT count(*) FROM big');
	($ret, $out, $err) = $full->psql('postgres', q{
		INSERT INTO big SELECT i, ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, 256) WHERE i > 0)
		  FROM generate_series(100001, 100100) i});
	is($ret, 0, 'after freeing space inserts resume') or diag($err);
	is($full->safe_psql('postgres', 'SELECT count(*) FROM big'), $before + 100, 'the rows are in the table');
	index_equals_heap($full, 'big', 'after the disk was full',
		"(SELECT v FROM big WHERE id = 1)");
	$full->stop;
}

$node->stop;
done_testing();
