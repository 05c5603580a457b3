# Basic lifecycle of a hannoy index: installing the extension, and CREATE
# INDEX cancelled, rolled back and watched.
#
# Proves that:
#  (a) without shared_preload_libraries, CREATE EXTENSION hannoy fails with
#      an error that names shared_preload_libraries and a HINT, and leaves
#      nothing installed;
#  (b) a build cancelled by statement_timeout = '1s', and a build cancelled
#      by pg_cancel_backend() while it links the graph, stop within a few
#      seconds (DESIGN.md "The C / C++ boundary": slices of at most ~100 ms between
#      interrupt checks), leave no sidecar directory in $PGDATA/hannoy (DESIGN.md "Sidecar follows
#      the relation file")
#      and leave the table intact;
#  (c) while a build runs, pg_stat_progress_create_index shows hannoy's
#      phases ('loading vectors', 'linking graph', 'writing links');
#  (d) BEGIN; CREATE INDEX; ROLLBACK (and a transaction that fails after
#      its CREATE INDEX) leave no sidecar directory, although the directory
#      exists while the transaction is open.
# DROP INDEX is not tested here: removing its sidecar is a later issue.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use HannoyTestUtil;

my $BIG_ROWS = 100_000;    # 64-d: a build of about 14 s on 2 cores
my $SMALL_ROWS = 20_000;

############################################################################
# (a) CREATE EXTENSION without shared_preload_libraries.
############################################################################

my $plain = hannoy_node('nopreload', preload => 0);
my ($ret, $out, $err) =
  $plain->psql('postgres', 'CREATE EXTENSION hannoy', extra_params => [ '-v', 'VERBOSITY=default' ]);
isnt($ret, 0, 'without preloading, CREATE EXTENSION hannoy fails');
like($err, qr/ERROR:.*shared_preload_libraries/, 'the error names shared_preload_libraries');
like($err, qr/HINT:.*shared_preload_libraries/, 'the error has a HINT about shared_preload_libraries');
note "CREATE EXTENSION without preloading said:\n$err";
is( $plain->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'hannoy')
	     + (SELECT count(*) FROM pg_am WHERE amname = 'hannoy')
	     + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'hannoy%')
	     + (SELECT count(*) FROM pg_opclass WHERE opcname IN ('real_l2_ops', 'bit_hamming_ops'))
	     + (SELECT count(*) FROM pg_operator WHERE oprname IN ('<->', '<+>', '<^>')
	                                           AND oprleft = 'real[]'::regtype::oid)}),
	0,
	'nothing of the extension is installed');
$plain->stop;

############################################################################
# (b) Cancelled builds.
############################################################################

my $node = hannoy_node('lifecycle');
$node->safe_psql(
	'postgres', qq{
	SELECT setseed(0.25);
	CREATE TABLE big (id int PRIMARY KEY, v real[] NOT NULL);
	INSERT INTO big
	SELECT i, ARRAY(SELECT (random() * 2 - 1)::real + 0 * i FROM generate_series(1, 64))
	  FROM generate_series(1, $BIG_ROWS) i;
	SELECT setseed(0.5);
	CREATE TABLE small (id int PRIMARY KEY, v real[] NOT NULL);
	INSERT INTO small
	SELECT i, ARRAY(SELECT (random() * 2 - 1)::real + 0 * i FROM generate_series(1, 64))
	  FROM generate_series(1, $SMALL_ROWS) i;
	VACUUM ANALYZE big, small;
});
my $FINGERPRINT = q{SELECT count(*), sum(id), sum(v[1]::numeric), sum(v[64]::numeric) FROM big};
my $big_before = $node->safe_psql('postgres', $FINGERPRINT);

# Returns the names of the indexes of a table, as a comma-separated list.
sub indexes_of
{
	my ($table) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index "
		  . "WHERE indrelid = '$table'::regclass");
}

my @dirs_before = sidecar_dirs($node);
is(scalar(@dirs_before), 0, 'no sidecar directory before the first build');

my $t0 = now_s();
($ret, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '1s'; CREATE INDEX big_v ON big USING hannoy (v)");
my $took = now_s() - $t0;
isnt($ret, 0, 'CREATE INDEX under statement_timeout = 1s fails');
like($err, qr/canceling statement due to statement timeout/, 'it is cancelled by the timeout');
diag(sprintf('build cancelled by statement_timeout = 1s returned after %.3f s', $took));
cmp_ok($took, '<', 6.0, 'the cancelled build returns less than 5 s after the timeout fired');
is_deeply([ sidecar_dirs($node) ], \@dirs_before,
	'the build cancelled by the timeout leaves no sidecar directory');
is($node->safe_psql('postgres', $FINGERPRINT), $big_before, 'the table is intact');
is(indexes_of('big'), 'big_pkey', 'no index is left behind');

# Polls pg_stat_progress_create_index for the build on $table, every 20 ms,
# for at most $limit seconds, until the build ends or $stop (a phase name)
# shows up with some tuples done; returns
# the phases seen (in order), whether a sidecar directory showed up, and
# the backend's pid.
sub watch_build
{
	my ($table, $stop, $limit) = @_;
	my (@phases, %seen, $pid);
	my $had_sidecar = 0;
	my $deadline = now_s() + $limit;

	while (now_s() < $deadline)
	{
		my $row = $node->safe_psql('postgres',
			"SELECT pid, phase, tuples_done, tuples_total FROM pg_stat_progress_create_index "
			  . "WHERE relid = '$table'::regclass");
		if ($row ne '')
		{
			my ($p, $phase, $done, $total) = split /\|/, $row;
			$pid = $p;
			push @phases, $phase unless $seen{$phase}++;
			$had_sidecar = 1 if sidecar_dirs($node);
			last if defined $stop && $phase =~ /\Q$stop\E$/ && $done > 0;
		}
		elsif (defined $pid)
		{
			last;    # the build is over
		}
		usleep(20_000);
	}
	return (\@phases, $had_sidecar, $pid);
}

# A build cancelled by pg_cancel_backend() once it links the graph.
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/start/, "\\echo start\nCREATE INDEX big_v ON big USING hannoy (v);\n");
my ($phases, $had_sidecar, $pid) = watch_build('big', 'linking graph', 60);
ok((grep { /linking graph$/ } @$phases), "the build reached 'linking graph'")
  or diag('phases seen: ' . join(', ', @$phases));
ok($had_sidecar, 'the build has a sidecar directory while it runs');
note 'phases seen before the cancel: ' . join(', ', @$phases);

$t0 = now_s();
ok($node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)") eq 't', 'pg_cancel_backend');
my $cancelled = pump_until($bg->{run}, $bg->{timeout}, \$bg->{stderr}, qr/canceling statement/);
$took = now_s() - $t0;
ok($cancelled, 'the build linking the graph is cancelled by pg_cancel_backend')
  or diag("session stderr: $bg->{stderr}");
like($bg->{stderr}, qr/canceling statement due to user request/, 'with the user-request message');
diag(sprintf('build cancelled while linking the graph returned after %.3f s', $took));
cmp_ok($took, '<', 5.0, 'the build linking the graph stops less than 5 s after the cancel');
$bg->{stderr} = '';
is($bg->query('SELECT 1'), '1', 'the session is usable after the cancel');
is_deeply([ sidecar_dirs($node) ], \@dirs_before,
	'the cancelled build leaves no sidecar directory');
is($node->safe_psql('postgres', $FINGERPRINT), $big_before, 'the table is still intact');
is(indexes_of('big'), 'big_pkey', 'still no index is left behind');

############################################################################
# (c) Progress of a complete build.
############################################################################

$bg->query_until(qr/start/, "\\echo start\nCREATE INDEX small_v ON small USING hannoy (v);\n");
$t0 = now_s();
($phases) = watch_build('small', undef, 120);
is($bg->query('SELECT 1'), '1', 'the complete build finished');
is($bg->{stderr}, '', 'the complete build raised no message');
note sprintf('complete build of %d rows in about %.1f s, phases seen: %s',
	$SMALL_ROWS, now_s() - $t0, join(', ', @$phases));
# PostgreSQL shows an access method's phase as "building index: <name>".
my @hannoy_phases = grep { /(loading vectors|linking graph|writing links)$/ } @$phases;
ok(scalar(@hannoy_phases) > 0, 'pg_stat_progress_create_index showed a hannoy build phase')
  or diag('phases seen: ' . join(', ', @$phases));
my @dirs_small = sidecar_dirs($node);
is(scalar(@dirs_small), 1, 'the complete build left one sidecar directory');
my $filenode = $node->safe_psql('postgres', q{SELECT pg_relation_filenode('small_v')});
like($dirs_small[0] // '', qr/^\d+_\d+_\Q$filenode\E$/, 'named <spc>_<db>_<relfilenode>');
ok(-f $node->data_dir . "/hannoy/$dirs_small[0]/data.mdb", 'with data.mdb');
is( $node->safe_psql(
		'postgres',
		'SET enable_seqscan = off; SELECT id FROM small ORDER BY v <-> (SELECT v FROM small WHERE id = 77) LIMIT 1'),
	77,
	'the new index finds a row by its own vector');

############################################################################
# (d) CREATE INDEX in a transaction that rolls back.
############################################################################

# Runs CREATE INDEX in an open transaction, checks its sidecar directory
# exists, ends the transaction with $end and checks it is gone.
sub create_and_abort
{
	my ($name, $end) = @_;
	$bg->query_safe('BEGIN');
	$bg->query_safe("CREATE INDEX $name ON small USING hannoy (v)");
	my $fn = $bg->query_safe("SELECT pg_relation_filenode('$name')");
	my @inside = sidecar_dirs($node);
	ok((grep { /_\Q$fn\E$/ } @inside), "$name: its sidecar directory exists inside the transaction")
	  or diag('sidecar directories: ' . join(', ', @inside));
	$bg->query($end);
	$bg->query('ROLLBACK') if $end !~ /ROLLBACK/;
	$bg->{stderr} = '';
	is_deeply([ sidecar_dirs($node) ], \@dirs_small, "$name: no sidecar directory after the abort");
	is(indexes_of('small'), 'small_pkey,small_v', "$name: no index left behind");
}

create_and_abort('small_rolled_back', 'ROLLBACK');
create_and_abort('small_failed', 'SELECT 1 / 0');

$bg->quit;
my $log = slurp_file($node->logfile);
unlike($log, qr/\b(PANIC|could not remove hannoy sidecar)\b/, 'no PANIC, no failed sidecar removal');
$node->stop;
done_testing();
