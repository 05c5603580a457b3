# Sidecar files follow their index through DDL, transactionally (DESIGN.md "Sidecar follows the
# relation file").
#
# After each event below, the sidecar directories in $PGDATA/hannoy are
# exactly those of the relation files of existing hannoy indexes (none left
# over, none missing), an unbounded ordered index scan returns exactly the
# rows a sequential scan returns, and the top 10 at hannoy.ef_search 1000
# equal the exact top 10:
#   DROP INDEX rolled back, and rolled back to a savepoint; REINDEX and
#   REINDEX CONCURRENTLY; TRUNCATE, also inside the creating transaction;
#   VACUUM FULL; ALTER COLUMN TYPE (which keeps the index's file under a new
#   OID); CREATE and DROP INDEX CONCURRENTLY; CLUSTER; SET UNLOGGED and
#   SET LOGGED; a partitioned table; pg_dump and restore; an unlogged table
#   through a crash; DROP TABLE; DROP SCHEMA CASCADE; DROP OWNED BY, rolled
#   back and committed; a temporary index at session end; DROP DATABASE;
#   and hannoy_sweep() finds nothing to remove.  Sidecar directories are 0700
# and their files 0600.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use HannoyTestUtil;

my $node = hannoy_node('lifecycle');
my $query = "'{0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8}'";

# Checks the sidecars and the scans of table 'items' after an event.
sub check_after
{
	my ($event, %o) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @dirs = grep { !/^t/ } sidecar_dirs($node);
	is_deeply(\@dirs, [ expected_sidecar_dirs($node) ], "$event: one sidecar per hannoy index, no more");
	return if $o{no_scan};
	my ($idx) = scan_ids($node, 'items', 'index', query => $query);
	my ($seq) = scan_ids($node, 'items', 'seq');
	compare_id_sets($idx, $seq, "$event: unbounded index scan equals a sequential scan");
	# the widest search (hannoy.ef_search at its maximum, 1000, two thirds of
	# the rows or more) returns the exact top 10
	my $top = sub {
		my ($settings) = @_;
		return $node->safe_psql('postgres', "$settings SELECT string_agg(id::text, ',') FROM "
			  . "(SELECT id FROM items ORDER BY v <-> $query LIMIT 10) s");
	};
	is($top->('SET enable_seqscan = off; SET hannoy.ef_search = 1000;'),
		$top->('SET enable_indexscan = off;'),
		"$event: the top 10 with the widest search equals the exact top 10");
}

# Inserts $n more seeded rows into 'items' starting at id $from.
sub add_rows
{
	my ($from, $n) = @_;
	my $vecs = seeded_vectors($n, 8, $from);
	my @values = map { sprintf("(%d, '%s')", $from + $_, vector_literal($vecs->[$_])) }
	  0 .. $n - 1;
	$node->safe_psql('postgres', 'INSERT INTO items VALUES ' . join(',', @values));
}

$node->safe_psql('postgres', 'CREATE TABLE items (id int, v real[])');
add_rows(1, 1500);
$node->safe_psql('postgres', 'INSERT INTO items VALUES (0, NULL)');
$node->safe_psql('postgres', 'CREATE INDEX items_v ON items USING hannoy (v)');
check_after('CREATE INDEX');

# sidecars are private to the server user: directories 0700, files 0600
for my $d (sidecar_dirs($node))
{
	my $path = $node->data_dir . "/hannoy/$d";
	is(sprintf('%04o', (stat $path)[2] & 07777), '0700', "sidecar directory $d is 0700");
	opendir(my $dh, $path) or die "cannot list $path: $!";
	for my $f (sort grep { !/^\./ } readdir($dh))
	{
		is(sprintf('%04o', (stat "$path/$f")[2] & 07777), '0600', "sidecar file $d/$f is 0600");
	}
	closedir($dh);
}

$node->safe_psql('postgres', 'BEGIN; DROP INDEX items_v; ROLLBACK;');
check_after('DROP INDEX rolled back');

$node->safe_psql('postgres',
	'BEGIN; SAVEPOINT s; DROP INDEX items_v; ROLLBACK TO SAVEPOINT s; COMMIT;');
check_after('DROP INDEX rolled back to a savepoint');

$node->safe_psql('postgres', 'REINDEX INDEX items_v');
add_rows(2001, 100);
check_after('REINDEX, then inserts');

$node->safe_psql('postgres', 'REINDEX INDEX CONCURRENTLY items_v');
check_after('REINDEX CONCURRENTLY');

$node->safe_psql('postgres', 'BEGIN; REINDEX INDEX items_v; ROLLBACK;');
check_after('REINDEX rolled back');

$node->safe_psql('postgres', 'TRUNCATE items');
add_rows(1, 800);
check_after('TRUNCATE, then inserts');

$node->safe_psql('postgres', q{
	BEGIN;
	CREATE TABLE fresh (id int, v real[]);
	INSERT INTO fresh VALUES (1, '{1,2}'), (2, '{2,3}');
	CREATE INDEX fresh_v ON fresh USING hannoy (v);
	TRUNCATE fresh;
	INSERT INTO fresh VALUES (3, '{3,4}');
	COMMIT;});
check_after('TRUNCATE inside the creating transaction');
is($node->safe_psql('postgres',
		"SET enable_seqscan = off; SELECT string_agg(id::text, ',') FROM (SELECT id FROM fresh ORDER BY v <-> '{0,0}') s"),
	'3', 'the index truncated in its creating transaction holds only the new row');

$node->safe_psql('postgres', 'DELETE FROM items WHERE id % 3 = 0; VACUUM items;');
check_after('DELETE and VACUUM');

$node->safe_psql('postgres', 'VACUUM FULL items');
check_after('VACUUM FULL');

$node->safe_psql('postgres', 'ALTER TABLE items ALTER COLUMN v TYPE real[]');
check_after('ALTER COLUMN TYPE keeping the index file');
is($node->safe_psql('postgres', 'SELECT hannoy_sweep()'), '0',
	'hannoy_sweep() leaves the reused sidecar alone');
check_after('sweep after ALTER COLUMN TYPE');

$node->safe_psql('postgres',
	'CREATE INDEX CONCURRENTLY items_cos ON items USING hannoy (v real_cosine_ops)');
add_rows(3001, 50);
check_after('CREATE INDEX CONCURRENTLY');
is($node->safe_psql('postgres',
		"SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_cos'::regclass"),
	't', 'the concurrently built index is valid');
$node->safe_psql('postgres', 'DROP INDEX CONCURRENTLY items_cos');
check_after('DROP INDEX CONCURRENTLY');

$node->safe_psql('postgres', 'CREATE INDEX items_id ON items (id); CLUSTER items USING items_id;');
check_after('CLUSTER on another index');

$node->safe_psql('postgres', 'ALTER TABLE items SET UNLOGGED');
add_rows(4001, 20);
check_after('SET UNLOGGED');
$node->safe_psql('postgres', 'ALTER TABLE items SET LOGGED');
check_after('SET LOGGED');

$node->safe_psql('postgres', q{
	CREATE TABLE parts (id int, v real[]) PARTITION BY RANGE (id);
	CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100);
	CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (100) TO (200);
	INSERT INTO parts SELECT i, ARRAY[i % 7, i % 5]::real[] FROM generate_series(0, 199) i;
	CREATE INDEX parts_v ON parts USING hannoy (v);
	CREATE TABLE parts_3 PARTITION OF parts FOR VALUES FROM (200) TO (300);
	INSERT INTO parts SELECT i, ARRAY[i % 7, i % 5]::real[] FROM generate_series(200, 299) i;});
check_after('a partitioned table with a partition added later');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT count(*) FROM (SELECT id FROM parts ORDER BY v <-> '{1,1}') s}), '300',
	'an ordered scan over the partitioned index returns every row');

# pg_dump and restore into a new database rebuild the index there
my $dump = PostgreSQL::Test::Utils::tempdir . '/items.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-t', 'items', '-f', $dump, $node->connstr('postgres') ],
	'pg_dump of the table');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->safe_psql('restored', 'CREATE EXTENSION hannoy');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
check_after('pg_dump and restore');
my ($ridx) = scan_ids($node, 'items', 'index', query => $query, db => 'restored');
my ($rseq) = scan_ids($node, 'items', 'seq', db => 'restored');
compare_id_sets($ridx, $rseq, 'the restored index equals a sequential scan');
$node->safe_psql('postgres', 'DROP DATABASE restored');
check_after('DROP DATABASE of the restored copy');

# an unlogged table loses its rows in a crash; its index starts over
$node->safe_psql('postgres', q{
	CREATE UNLOGGED TABLE ulog (id int, v real[]);
	INSERT INTO ulog SELECT i, ARRAY[i, i]::real[] FROM generate_series(1, 100) i;
	CREATE INDEX ulog_v ON ulog USING hannoy (v);});
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', "INSERT INTO ulog VALUES (7, '{7,7}')");
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT string_agg(id::text, ',') FROM (SELECT id FROM ulog ORDER BY v <-> '{0,0}') s}), '7',
	'after a crash the unlogged index holds only the new row');
check_after('an unlogged table after a crash');

$node->safe_psql('postgres', 'DROP TABLE fresh');
check_after('DROP TABLE');

$node->safe_psql('postgres', q{
	CREATE SCHEMA gone;
	CREATE TABLE gone.t (v real[]);
	INSERT INTO gone.t VALUES ('{1,1}');
	CREATE INDEX ON gone.t USING hannoy (v);});
check_after('an index in another schema');
$node->safe_psql('postgres', 'DROP SCHEMA gone CASCADE');
check_after('DROP SCHEMA CASCADE');

# DROP OWNED drops a role's tables and their indexes: rolled back it keeps
# the sidecar and a working index; committed it removes the sidecar.
$node->safe_psql('postgres', q{
	CREATE ROLE leaver;
	CREATE TABLE owned_t (id int, v real[]);
	ALTER TABLE owned_t OWNER TO leaver;
	INSERT INTO owned_t SELECT i, ARRAY[i, -i]::real[] FROM generate_series(1, 50) i;
	CREATE INDEX owned_v ON owned_t USING hannoy (v);});
my @with_owned = sidecar_dirs($node);
$node->safe_psql('postgres', 'BEGIN; DROP OWNED BY leaver; ROLLBACK;');
check_after('DROP OWNED BY rolled back');
is_deeply([ sidecar_dirs($node) ], \@with_owned, 'DROP OWNED BY rolled back: the sidecar is still there');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT string_agg(id::text, ',' ORDER BY id) FROM (SELECT id FROM owned_t ORDER BY v <-> '{3,-3}' LIMIT 3) s}),
	'2,3,4', 'DROP OWNED BY rolled back: the index still answers');
$node->safe_psql('postgres', 'DROP OWNED BY leaver; DROP ROLE leaver;');
check_after('DROP OWNED BY');
is(scalar(sidecar_dirs($node)), scalar(@with_owned) - 1, 'DROP OWNED BY: its index\'s sidecar is gone');

# A temporary index lives only as long as its session.
$node->safe_psql('postgres', q{
	CREATE TEMP TABLE scratch (v real[]);
	INSERT INTO scratch VALUES ('{1,2,3}');
	CREATE INDEX ON scratch USING hannoy (v);
	SELECT 1;});
# the session's backend removes it while exiting, which may end after psql
my $temp_left;
for (1 .. 100)
{
	$temp_left = grep { /^t/ } sidecar_dirs($node);
	last if $temp_left == 0;
	usleep(100_000);
}
is($temp_left, 0, 'a temporary index leaves no sidecar after its session ends');

$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', q{
	CREATE EXTENSION hannoy;
	CREATE TABLE t (v real[]);
	INSERT INTO t VALUES ('{1,2}'), ('{2,1}');
	CREATE INDEX ON t USING hannoy (v);});
check_after('an index in another database');
my $other_oid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'other'");
$node->safe_psql('postgres', 'DROP DATABASE other');
is(scalar(grep { /^\d+_${other_oid}_/ } sidecar_dirs($node)), 0,
	'DROP DATABASE removes the sidecars of that database');
check_after('DROP DATABASE');

is($node->safe_psql('postgres', 'SELECT hannoy_sweep()'), '0',
	'hannoy_sweep() finds nothing left over');
check_after('final sweep');

$node->stop;
done_testing();
