# The orphan sweep runs after a crash-restart too, not only when the
# server starts.
#
# With restart_after_crash = on (PostgreSQL::Test::Cluster turns it off), a
# backend running CREATE INDEX USING hannoy is killed with SIGKILL once its
# sidecar exists.  The postmaster then reinitialises on its own (nobody
# restarts the server), and within seconds the killed build's sidecar must
# be gone, removed and logged by the sweep, while the sidecar of a committed
# index stays.  Done twice, to show that the sweep comes back after every
# crash-restart, not only after the first.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('sweep_after_crash', conf => "restart_after_crash = on\nautovacuum = off");
my $dir = PostgreSQL::Test::Utils::tempdir;

# The postmaster's PID, from postmaster.pid.
sub postmaster_pid
{
	my $text = slurp_file($node->data_dir . '/postmaster.pid');
	return (split /\n/, $text)[0];
}

# A committed index, whose sidecar must survive, and a table whose index
# takes some seconds to build (30,000 rows of 64 dimensions, one thread).
$node->safe_psql('postgres', q{
	CREATE TABLE small (id int, v real[]);
	INSERT INTO small SELECT i, ARRAY[i % 7, i % 5, i % 3, i]::real[] FROM generate_series(1, 200) i;
	CREATE INDEX small_v ON small USING hannoy (v);
	CREATE TABLE big (id int, v real[]);
	INSERT INTO big SELECT i, (SELECT array_agg(((hashint4(i * 64 + j) & 65535) / 65536.0)::real)
	                             FROM generate_series(0, 63) j)
	  FROM generate_series(1, 30000) i;
	CHECKPOINT;});
my @kept = sidecar_dirs($node);
is_deeply(\@kept, [ expected_sidecar_dirs($node) ], 'one sidecar, that of the committed index');
my $postmaster = postmaster_pid();

for my $round (1, 2)
{
	my $name = "crash $round";
	my $file = "$dir/build_$round.sql";
	PostgreSQL::Test::Utils::append_to_file($file,
		"SET hannoy.build_threads = 1;\nCREATE INDEX big_v ON big USING hannoy (v);\n");
	my $log_offset = -s $node->logfile;
	my %before = map { $_ => 1 } sidecar_dirs($node);
	my ($h) = run_psql_script($node, $file);

	# the build's sidecar appears, and the build is still running
	my @orphan;
	ok(wait_until(60, sub { @orphan = grep { !$before{$_} } sidecar_dirs($node); @orphan == 1 }),
		"$name: the build has created its sidecar");
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX big_v%' AND state = 'active'");
	like($pid, qr/^\d+$/, "$name: the build is still running");
	ok(kill('KILL', $pid), "$name: SIGKILL sent to the building backend");
	eval { $h->finish };

	# the postmaster reinitialises by itself
	ok( wait_until(60, sub { slurp_file($node->logfile, $log_offset) =~ /database system is ready to accept connections/ }),
		"$name: the server reinitialised and accepts connections again");
	$node->poll_query_until('postgres', 'SELECT 1', '1')
	  or die "$name: the server did not come back";
	is(postmaster_pid(), $postmaster, "$name: the same postmaster, restarted by nobody");

	# nothing but waiting: the orphan goes
	my $gone = wait_until(30, sub { !-d $node->data_dir . "/hannoy/$orphan[0]" });
	ok($gone, "$name: the killed build's sidecar is removed after the crash-restart")
	  or diag('sidecars: ' . join(' ', sidecar_dirs($node)));
	is_deeply([ sidecar_dirs($node) ], \@kept, "$name: the committed index keeps its sidecar");
	my $log = slurp_file($node->logfile, $log_offset);
	like($log, qr/all server processes terminated; reinitializing/, "$name: it was a crash-restart");
	# the worker logs right after it removed the directory: give the line time to arrive
	my $removal = qr/removed hannoy sidecar "[^"]*\/\Q$orphan[0]\E": no index owns it/;
	ok(wait_until(10, sub { slurp_file($node->logfile, $log_offset) =~ $removal }),
		"$name: the removal is logged");
}

# the committed index still works, and a clean stop is quiet
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT id FROM small ORDER BY v <-> '{1,1,1,1}' LIMIT 1}), '1', 'the committed index answers');
my $log_offset = -s $node->logfile;
$node->stop;
unlike(slurp_file($node->logfile, $log_offset), qr/\b(FATAL|ERROR|WARNING|PANIC):|hannoy sweep.*exited with exit code/,
	'a clean stop logs no error');
done_testing();
