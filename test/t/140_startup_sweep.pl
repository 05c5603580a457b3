# The sweep at server start (DESIGN.md "Lifecycle"): sidecars that
# nothing owns are removed by a background worker once the server has
# started, without anyone calling hannoy_sweep() or building an index.
#
# Orphans of two kinds are made honestly:
#  - builds killed midway (pg_ctl stop -m immediate while CREATE INDEX runs
#    in two databases at once) leave the sidecars of indexes that were never
#    committed;
#  - a database dropped between its commit and the removal of its sidecars
#    (a crash at that moment), shown by putting back a copy of its sidecar
#    taken before DROP DATABASE.
# A prepared transaction's CREATE INDEX is not an orphan: its index is
# uncommitted, and the sweep must keep its sidecar (conditional lock on the
# recorded index, DESIGN.md "Sidecar follows the relation file").
#
# After the restart, with nothing but waiting: the sidecar directories are
# exactly those of the hannoy indexes plus the prepared one's, each removal
# is logged once, COMMIT PREPARED then gives a working index, and
# hannoy_sweep() finds nothing left.  In recovery the worker does not run
# (a hot standby's linker sweeps instead, test 210): on a standby with
# hot_standby = off an orphan stays until the standby is promoted, and then
# it goes.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('sweep',
	conf => "max_prepared_transactions = 5\nautovacuum = off\nwal_level = replica\nmax_wal_senders = 4");
my $dir = PostgreSQL::Test::Utils::tempdir;
my $query = "'{0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8}'";

# A table of $rows seeded 8-d rows; with an index named ${table}_v unless
# $noindex.
sub make_table
{
	my ($db, $table, $rows, %o) = @_;
	my $vecs = seeded_vectors($rows, 8, 7);
	my $values = join(',', map { sprintf("(%d, '%s')", $_ + 1, vector_literal($vecs->[$_])) } 0 .. $rows - 1);
	$node->safe_psql($db, "CREATE TABLE $table (id int, v real[]); INSERT INTO $table VALUES $values;");
	$node->safe_psql($db, "CREATE INDEX ${table}_v ON $table USING hannoy (v)") unless $o{noindex};
}

# Sidecar directories present now that are not in the list $old.
sub new_dirs
{
	my ($old) = @_;
	my %seen = map { $_ => 1 } @$old;
	return grep { !$seen{$_} } sidecar_dirs($node);
}

############################################################################
# Indexes that must survive, in two databases.
############################################################################
make_table('postgres', 'small', 300);
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION hannoy');
make_table('other', 'small', 300);
# 40,000 rows of 32 dimensions: a build of some seconds, in both databases
for my $db ('postgres', 'other')
{
	$node->safe_psql($db, q{
		CREATE TABLE big (id int, v real[]);
		INSERT INTO big SELECT i, (SELECT array_agg(((hashint4(i * 32 + j) & 65535) / 65536.0)::real)
		                             FROM generate_series(0, 31) j)
		  FROM generate_series(1, 40000) i;});
}

############################################################################
# A database dropped between its commit and the removal of its sidecars.
############################################################################
$node->safe_psql('postgres', 'CREATE DATABASE doomed');
$node->safe_psql('doomed', 'CREATE EXTENSION hannoy');
make_table('doomed', 'gone', 200);
my $doomed_oid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'doomed'");
my ($doomed_dir) = grep { /^\d+_${doomed_oid}_\d+$/ } sidecar_dirs($node);
ok(defined $doomed_dir, 'the doomed database has a sidecar');
$node->stop;
system('cp', '-a', $node->data_dir . "/hannoy/$doomed_dir", "$dir/doomed") == 0
  or die 'cannot copy the sidecar';
$node->start;
$node->safe_psql('postgres', 'DROP DATABASE doomed');
ok(!-d $node->data_dir . "/hannoy/$doomed_dir", 'DROP DATABASE removed its sidecar');

############################################################################
# A prepared CREATE INDEX: uncommitted, so its sidecar is not an orphan.
############################################################################
my @before_prepare = sidecar_dirs($node);
$node->safe_psql('postgres', q{
	BEGIN;
	CREATE INDEX prep_v ON small USING hannoy (v real_cosine_ops);
	PREPARE TRANSACTION 'p1';});
my ($prep_dir) = new_dirs(\@before_prepare);
ok(defined $prep_dir, 'the prepared CREATE INDEX has a sidecar');
# crash recovery starts here (replaying DROP DATABASE would warn)
$node->safe_psql('postgres', 'CHECKPOINT');

############################################################################
# Builds killed midway in two databases at once.
############################################################################
my @before_builds = sidecar_dirs($node);
my @jobs;
for my $db ('postgres', 'other')
{
	my $file = "$dir/build_$db.sql";
	PostgreSQL::Test::Utils::append_to_file($file,
		"SET hannoy.build_threads = 1;\nCREATE INDEX big_v ON big USING hannoy (v);\n");
	my ($h) = run_psql_script($node, $file, db => $db);
	push @jobs, $h;
}
ok(wait_until(60, sub { scalar(new_dirs(\@before_builds)) == 2 }),
	'both builds have created their sidecars');
my $phases = $node->safe_psql('postgres',
	'SELECT count(*) FROM pg_stat_progress_create_index');
$node->stop('immediate');
eval { $_->finish } for @jobs;
is($phases, '2', 'both builds were still running when the server was killed');
my @killed = new_dirs(\@before_builds);

# the doomed database's sidecar comes back, as if the crash had come just
# after DROP DATABASE committed
system('cp', '-a', "$dir/doomed", $node->data_dir . "/hannoy/$doomed_dir") == 0
  or die 'cannot restore the sidecar';

my @orphans = sort(@killed, $doomed_dir);
my @present = sidecar_dirs($node);
is(scalar(@orphans), 3, 'three orphans: two killed builds and a dropped database');

############################################################################
# The restart sweeps them, with no one asking.
############################################################################
my $log_offset = -s $node->logfile;
$node->start;
my @want = sort(expected_sidecar_dirs($node), $prep_dir);
my $swept = wait_until(60, sub { join(' ', sidecar_dirs($node)) eq join(' ', @want) });
ok($swept, 'after the restart the sidecars are exactly those of the indexes and the prepared one')
  or diag('present: ' . join(' ', sidecar_dirs($node)) . "\nwanted: " . join(' ', @want));
ok(-d $node->data_dir . "/hannoy/$prep_dir", 'the prepared CREATE INDEX keeps its sidecar');

my $log = slurp_file($node->logfile, $log_offset);
my @removed = sort($log =~ /LOG:  removed hannoy sidecar "[^"]*\/hannoy\/([^"]+)"/g);
is_deeply(\@removed, \@orphans, 'each orphan is logged once as it is removed');
like($log, qr/removed hannoy sidecar "[^"]*\/\Q$doomed_dir\E": its database no longer exists/,
	'the dropped database is named as the reason');
is_deeply(log_problems($node, offset => $log_offset), [], 'the server logs no warning or error');

$node->safe_psql('postgres', "COMMIT PREPARED 'p1'");
my ($idx) = scan_ids($node, 'small', 'index', query => $query, op => '<=>');
my ($seq) = scan_ids($node, 'small', 'seq');
compare_id_sets($idx, $seq, 'the index of the prepared transaction, committed, returns every row');
is_deeply(verify_problems($node, 'prep_v'), [], 'and verifies clean');
for my $db ('postgres', 'other')
{
	my ($i) = scan_ids($node, 'small', 'index', query => $query, db => $db);
	my ($s) = scan_ids($node, 'small', 'seq', db => $db);
	compare_id_sets($i, $s, "$db: the surviving index returns every row");
}
is($node->safe_psql('postgres', 'SELECT hannoy_sweep()'), '0', 'hannoy_sweep() finds nothing left');

############################################################################
# Not in recovery: a standby without hot standby (no linker either) keeps
# an orphan until it is promoted.
############################################################################
$node->append_conf('pg_hba.conf', 'local replication all trust');
$node->reload;
my @before_p2 = sidecar_dirs($node);
$node->safe_psql('postgres', q{
	BEGIN;
	CREATE INDEX prep2_v ON small USING hannoy (v real_l1_ops);
	PREPARE TRANSACTION 'p2';});
my ($p2_dir) = new_dirs(\@before_p2);
$node->backup('base');
# rolled back elsewhere: the sidecar is an orphan now, on both servers
$node->safe_psql('postgres', "ROLLBACK PREPARED 'p2'");
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'hot_standby = off');
$standby->start;
$node->wait_for_catchup($standby);
sleep 3;
ok(-d $standby->data_dir . "/hannoy/$p2_dir", 'on the standby the orphan stays (no sweep in recovery)');
unlike(slurp_file($standby->logfile), qr/removed hannoy sidecar/, 'the standby logs no removal');
$standby->promote;
ok(wait_until(60, sub { !-d $standby->data_dir . "/hannoy/$p2_dir" }),
	'once promoted, the former standby removes the orphan');
like(slurp_file($standby->logfile), qr/removed hannoy sidecar "[^"]*\/\Q$p2_dir\E"/,
	'and logs it');
ok(-d $node->data_dir . "/hannoy/$p2_dir", 'the primary keeps it until its next sweep');
is($node->safe_psql('postgres', 'SELECT hannoy_sweep()'), '1', 'which hannoy_sweep() is');
$standby->stop;

$node->stop;
done_testing();
