# Crash safety of hannoy indexes (DESIGN.md "WAL before sidecar", "Durable removal", "Sidecar
# follows the relation file").
#
# Kills the server (pg_ctl stop -m immediate: no shutdown checkpoint, WAL
# replay at the next start) HANNOY_CRASH_KILLS times (default 6; the issue's
# full run is 20 or more), cycling through three kinds of work:
#   build    CREATE INDEX on a 12,000-row table, or REINDEX of the main
#            index, in a background session;
#   inserts  four background sessions committing small transactions (1 to 3
#            rows, some with NULL vectors, some rolled back, some scanning
#            the index before COMMIT) into the main table;
#   vacuum   VACUUM of the main table after a DELETE of about a quarter of
#            it.
# Each kill comes at a fraction of the duration the same work took in a run
# without a kill (for VACUUM and REINDEX scaled by the main table's rows);
# the fractions, and the insert scripts, come from a seeded generator
# (HANNOY_CRASH_SEED, default 70) and are spread over the whole duration
# (stratified per kind), so a run is repeatable up to timing.
#
# Proves that after every restart:
#  - for every hannoy index, an unbounded ordered index scan returns exactly
#    the rows a sequential scan returns (nothing lost, nothing twice,
#    nothing deleted, rolled back or lost in the crash);
#  - every row with a vector is among the first 10 rows of
#    ORDER BY v <-> its own vector;
#  - hannoy_verify reports nothing;
#  - every transaction psql saw commit is visible;
#  - the vectors of rows that are gone (deleted, rolled back, lost in the
#    crash) never make the index return rows out of the order of the
#    operator's value on their current vectors (a stale TID mapping would
#    rank a row by a vector it no longer has), searching with
#    hannoy.ef_search = 1000;
#  - after hannoy_sweep() the sidecar directories are exactly those of the
#    existing hannoy indexes: what a killed build left is removed, nothing
#    else is.
# Then VACUUM frees the slots of deleted rows, rows with NULL vectors and
# rows with new vectors are inserted into those very TIDs (shown with
# pageinspect), and no stale entry surfaces (DESIGN.md "WAL before sidecar", "Durable removal",
# "Exact distances"): the unbounded index
# scan equals a sequential scan, rows without a vector come after every row
# with one, and the first rows for the old vectors of the reused TIDs come in
# the order of the operator's value on each row's current vector.  The
# server logs no WARNING, ERROR, FATAL or PANIC throughout (but the refusal of
# a connection that comes while it stops).
#
# The nodes run with fsync = off (as every TAP node does): a kill loses what
# was in the server's memory (WAL buffers, shared buffers), not what was
# written to the operating system.  So this proves the order in which WAL,
# sidecar and heap are written (DESIGN.md "WAL before sidecar", "Durable removal"), not that the
# syncs happen.
use strict;
use warnings;

use IPC::Run ();
use List::Util qw(min);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use HannoyTestUtil;

my $KILLS = $ENV{HANNOY_CRASH_KILLS} // 6;
my $SEED = $ENV{HANNOY_CRASH_SEED} // 70;
my $T_ROWS = 8000;       # initial rows of the main table t (ids 1..8000)
my $B_ROWS = 12_000;     # rows of 'built', the table whose index is rebuilt
my $SESSIONS = 4;        # inserting sessions per insert round
my $TXNS = 400;          # transactions per inserting session and round
my $TIMEOUT = 300;       # seconds any background psql may run
my $QUERY = 'vec(123456789)';    # the query vector of the unbounded scans

srand($SEED);

my $node = hannoy_node('crash',
	conf => join("\n", 'autovacuum = off', 'wal_level = replica', 'max_wal_senders = 0',
		'log_statement = none'));
my $dir = PostgreSQL::Test::Utils::tempdir;
my $t_start = now_s();

# vec(id): the vector of row id, 16 components in [-1, 1) from a hash, so
# that every run and every session agrees on it without a source table.
# attempted: every id ever given to an insert into t (probes for gone rows).
$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION pageinspect;
	CREATE FUNCTION vec(id bigint) RETURNS real[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
	  AS \$\$ SELECT array_agg(((hashint8(id * 16 + j) & 65535) / 32768.0 - 1)::real ORDER BY j)
	            FROM generate_series(0, 15) j \$\$;
	CREATE TABLE t (id bigint PRIMARY KEY, v real[]);
	CREATE TABLE attempted (id bigint PRIMARY KEY);
	INSERT INTO t SELECT g, vec(g) FROM generate_series(1, $T_ROWS) g;
	INSERT INTO attempted SELECT generate_series(1, $T_ROWS);
	CREATE INDEX t_v ON t USING hannoy (v);
	CREATE TABLE built (id bigint PRIMARY KEY, v real[]);
	INSERT INTO built SELECT g, vec(g) FROM generate_series(10000001, 10000000 + $B_ROWS) g;
});

############################################################################
# Background work and kills.
############################################################################

# Starts psql on the script $sql in the background (ON_ERROR_STOP, tuples
# only) and returns a job: its harness, its stdout and stderr.
sub start_job
{
	my ($name, $sql) = @_;
	my $file = "$dir/$name.sql";
	PostgreSQL::Test::Utils::append_to_file($file,
		"SET client_min_messages = warning;\n$sql\\echo job done\n");
	my $job = { name => $name, out => '', err => '', t0 => now_s() };
	$job->{h} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-f', $file
		],
		'<', \undef, '>', \$job->{out}, '2>', \$job->{err},
		IPC::Run::timeout($TIMEOUT));
	return $job;
}

# Waits for a job to end; returns whether psql succeeded.
sub finish_job
{
	my ($job) = @_;
	my $ok = eval { $job->{h}->finish };
	if ($@)
	{
		$job->{err} .= "harness: $@";
		eval { $job->{h}->kill_kill };
		return 0;
	}
	return $ok;
}

# Whether a job's psql has not yet run its whole script.
sub job_running
{
	my ($job) = @_;
	eval { $job->{h}->pump_nb };
	return $job->{out} !~ /^job done$/m;
}

# Runs jobs to their end without a kill; returns the seconds from the
# start of the first to the end of the last.
sub run_jobs
{
	my ($name, @jobs) = @_;
	my $t0 = min(map { $_->{t0} } @jobs);
	for my $job (@jobs)
	{
		ok(finish_job($job) && $job->{err} eq '', "$name: $job->{name} succeeded")
		  or diag("stderr of $job->{name}: $job->{err}");
	}
	return now_s() - $t0;
}

# A psql session that reports, quickly, what runs just before a kill.
my $monitor;
my @dirs_at_kill;    # sidecar directories while the server was down after the last kill

sub open_monitor
{
	$monitor = { in => '', out => '', err => '' };
	$monitor->{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-At', '-d', $node->connstr('postgres') ],
		'<', \$monitor->{in}, '>', \$monitor->{out}, '2>', \$monitor->{err},
		IPC::Run::timeout($TIMEOUT));
}

# Runs a query in the monitor session and returns its output.
sub monitor_query
{
	my ($sql) = @_;
	$monitor->{out} = '';
	$monitor->{in} .= "$sql;\n\\echo monitor-end\n";
	$monitor->{h}->pump until $monitor->{out} =~ /^monitor-end$/m;
	(my $result = $monitor->{out}) =~ s/^monitor-end\n//m;
	chomp $result;
	return $result;
}

# Ends the monitor session (its server may be gone).
sub close_monitor
{
	$monitor->{in} .= "\\q\n";
	eval { $monitor->{h}->finish };
}

# Waits until $delay seconds after the first job started, notes what runs,
# kills the server, waits for the jobs' psql to notice, and starts the
# server again (crash recovery).  Returns a short description of the moment
# of the kill, and whether a job was still running then.
sub kill_after
{
	my ($delay, @jobs) = @_;
	my $wait = min(map { $_->{t0} } @jobs) + $delay - now_s();
	usleep(int($wait * 1_000_000)) if $wait > 0;
	my $running = grep { job_running($_) } @jobs;
	my $moment = now_s() - min(map { $_->{t0} } @jobs);
	my $state = monitor_query(q{
		SELECT coalesce((SELECT string_agg(phase, ',') FROM pg_stat_progress_create_index), '-')
		       || ' | ' ||
		       coalesce((SELECT string_agg(phase, ',') FROM pg_stat_progress_vacuum), '-')});
	$node->stop('immediate');
	# what the crash left, before the start-up sweep worker looks at it
	@dirs_at_kill = sidecar_dirs($node);
	close_monitor();
	for my $job (@jobs)
	{
		finish_job($job);
		# psql may only have lost its connection
		my @errors = grep { /\bERROR:/ } split /\n/, $job->{err};
		is(scalar(@errors), 0, "$job->{name}: no error before the kill")
		  or diag(join("\n", @errors));
	}
	$node->start;
	open_monitor();
	return (sprintf('after %.3f s (%.3f s drawn), %d of %d jobs running, build | vacuum phase: %s',
			$moment, $delay, $running, scalar(@jobs), $state),
		$running > 0);
}

############################################################################
# The three kinds of work.
############################################################################

my $build_count = 0;
my $b_builds = 0;    # CREATE INDEX runs on built, killed or not

# Starts a build: CREATE INDEX on built (dropping the index of a previous round)
# or REINDEX of t's index, alternately.  Returns the kind and the job.
sub start_build
{
	my $kind = $build_count++ % 2 == 0 ? 'create' : 'reindex';
	$b_builds++ if $kind eq 'create';
	my $sql =
	  $kind eq 'create'
	  ? "DROP INDEX IF EXISTS built_v;\nCREATE INDEX built_v ON built USING hannoy (v);\n"
	  : "REINDEX INDEX t_v;\n";
	return ($kind, start_job("build$build_count", $sql));
}

# Returns a script of $TXNS small transactions inserting rows into t from id
# $lo on, and the highest id it may use.  One transaction in ten rolls back,
# one row in twenty has a NULL vector, one transaction in ten scans the
# index before COMMIT (which applies its rows to the sidecar early).  After
# each COMMIT psql prints 'committed <first> <last>'.
sub insert_script
{
	my ($lo) = @_;
	my $sql = "SET enable_seqscan = off;\n";
	my $id = $lo;

	for (1 .. $TXNS)
	{
		my $hi = $id + int(rand(3));
		my $vector = rand() < 0.05 ? 'NULL::real[]' : 'vec(g)';
		my $scan = rand() < 0.1;
		my $commit = rand() >= 0.1;
		$sql .= "BEGIN;\nINSERT INTO t SELECT g, $vector FROM generate_series($id, $hi) g;\n";
		$sql .= "SELECT id FROM t ORDER BY v <-> vec($id) LIMIT 0;\n" if $scan;
		$sql .= $commit ? "COMMIT;\n\\echo committed $id $hi\n" : "ROLLBACK;\n";
		$id = $hi + 1;
	}
	return ($sql, $lo + 3 * $TXNS - 1);
}

my $insert_round = 0;

# Starts $SESSIONS inserting sessions, each on its own id range (recorded
# in 'attempted' first); returns the jobs.
sub start_inserts
{
	my (@scripts, @ranges);
	$insert_round++;
	for my $s (1 .. $SESSIONS)
	{
		my $lo = 1_000_000 * $insert_round + 100_000 * $s;
		my ($sql, $hi) = insert_script($lo);
		push @scripts, $sql;
		push @ranges, "generate_series($lo, $hi)";
	}
	$node->safe_psql('postgres',
		'INSERT INTO attempted ' . join(' UNION ALL ', map { "SELECT $_" } @ranges));
	return map { start_job("insert$insert_round-" . ($_ + 1), $scripts[$_]) } 0 .. $#scripts;
}

# The ids whose COMMIT the jobs' psql reported.
sub committed_ids
{
	my @ids;
	for my $job (@_)
	{
		while ($job->{out} =~ /^committed (\d+) (\d+)$/mg)
		{
			push @ids, $1 .. $2;
		}
	}
	return \@ids;
}

my $vacuum_round = 0;

# Deletes about a quarter of t (a different quarter each round) and starts
# VACUUM.
sub start_vacuum
{
	$vacuum_round++;
	$node->safe_psql('postgres', "DELETE FROM t WHERE (hashint8(id + $vacuum_round * 7919) & 3) = 0");
	return start_job("vacuum$vacuum_round", "VACUUM (INDEX_CLEANUP ON) t;\n");
}

############################################################################
# Checks.
############################################################################

# Explains rows of $table that their own vector did not find: their ctid,
# their place in an unbounded index scan at the default ef_search and at
# ef_search 1000, and what hannoy_verify says.
sub miss_details
{
	my ($table, $misses) = @_;
	my @lines;
	for my $id (@{$misses}[ 0 .. min($#$misses, 9) ])
	{
		my $place = sub {
			my ($ef) = @_;
			return $node->safe_psql('postgres', qq{
				SET enable_seqscan = off; SET hannoy.ef_search = $ef;
				SELECT n FROM (SELECT id, row_number() OVER () AS n
				                 FROM (SELECT id FROM $table b
				                        ORDER BY b.v <-> (SELECT v FROM $table WHERE id = $id)) s) r
				 WHERE id = $id});
		};
		my $ctid = $node->safe_psql('postgres', "SELECT ctid FROM $table WHERE id = $id");
		push @lines,
		  sprintf('id %s ctid %s: place %s in an unbounded index scan by its own vector, %s with ef_search 1000',
			$id, $ctid, $place->(40), $place->(1000));
	}
	my $problems = verify_problems($node, "${table}_v");
	push @lines, sprintf('hannoy_verify reports %d rows (%d unreachable): %s',
		scalar(@$problems), scalar(grep { /^unreachable\|/ } @$problems),
		join('; ', @{$problems}[ 0 .. min($#$problems, 9) ]));
	return join("\n", @lines);
}

# The checks of one index: unbounded index scan against a sequential scan,
# every row's own vector, hannoy_verify.
sub check_index
{
	my ($table, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	my ($by_index) = scan_ids($node, $table, 'index', query => $QUERY);
	my ($by_seq) = scan_ids($node, $table, 'seq');
	compare_id_sets($by_index, $by_seq,
		"$what: $table: an unbounded index scan returns the seq scan's rows");
	my ($misses) = self_lookup_misses($node, $table, where => 'a.v IS NOT NULL');
	is(scalar(@$misses), 0,
		"$what: $table: every row with a vector is among the 10 nearest to its own vector")
	  or diag(miss_details($table, $misses));
	my $problems = verify_problems($node, "${table}_v");
	is(scalar(@$problems), 0, "$what: $table: hannoy_verify reports nothing")
	  or diag(join("\n", @{$problems}[ 0 .. min($#$problems, 19) ]));
}

# Returns the probes (ids from the SQL $probes, a query of id and pv, the
# probe vector) for which the first 10 rows of t ORDER BY v <-> pv do not
# come in order of v <-> pv computed on the rows' current vectors, and how
# many probes there were.  Only the first hannoy.ef_search candidates come
# nearest first, and tombstones and dead rows take places among them (many
# do after kills that stop VACUUM before its repair), so the probes search
# with the largest window, 1000.
sub out_of_order_probes
{
	my ($probes) = @_;
	my $sql = qq{
		SELECT p.id, x.ds
		  FROM ($probes) p
		 CROSS JOIN LATERAL (SELECT array_agg(s.d) AS ds
		                       FROM (SELECT b.v <-> p.pv AS d FROM t b
		                              ORDER BY b.v <-> p.pv LIMIT 10) s) x
		 WHERE x.ds IS DISTINCT FROM (SELECT array_agg(e ORDER BY e) FROM unnest(x.ds) e)};
	my $settings = 'SET enable_seqscan = off; SET enable_bitmapscan = off; SET hannoy.ef_search = 1000;';
	my $plan = $node->safe_psql('postgres', "$settings EXPLAIN (COSTS OFF) $sql");
	die "the probe is not an index scan on t:\n$plan" unless $plan =~ /Index Scan using t_v on t b\b/;
	my $bad = [ grep { $_ ne '' } split /\n/, $node->safe_psql('postgres', "$settings $sql") ];
	my $count = $node->safe_psql('postgres', "SELECT count(*) FROM ($probes) p");
	return ($bad, $count);
}

# The gone rows probed after each restart: up to 1,000 of them, a sample
# fixed by a hash.
my $GONE_PROBES = q{
	SELECT a.id, vec(a.id) AS pv FROM attempted a
	 WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.id = a.id)
	 ORDER BY hashint8(a.id), a.id LIMIT 1000};

my $b_checked_build = -1;

# Checks that the rows whose COMMIT psql saw (ids in $ids) are visible.
sub check_committed
{
	my ($what, $ids) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $visible =
	  @$ids
	  ? $node->safe_psql('postgres',
		'SELECT count(*) FROM t WHERE id = ANY(\'{' . join(',', @$ids) . '}\'::bigint[])')
	  : 0;
	is($visible, scalar(@$ids),
		"$what: all " . scalar(@$ids) . ' rows whose COMMIT psql saw are visible');
}

# Every check after an event: t's index (and built's, once per build), the
# committed rows ($committed: ids psql saw commit), the probes with gone
# rows' vectors, the sweep and the sidecar directories.
sub check_all
{
	my ($what, %o) = @_;
	my $t0 = now_s();
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	check_index('t', $what);
	my $b_exists = $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('built_v') AND indisvalid});
	if ($b_exists && $b_checked_build != $b_builds)
	{
		check_index('built', $what);
		$b_checked_build = $b_builds;
	}

	check_committed($what, $o{committed}) if $o{committed};

	my ($bad, $probes) = out_of_order_probes($GONE_PROBES);
	is(scalar(@$bad), 0,
		"$what: the vectors of $probes gone rows find rows in the order of their current vectors")
	  or diag('probe id|distances: ' . join("\n", @{$bad}[ 0 .. min($#$bad, 9) ]));

	# the start-up sweep worker may be running: compare with what the crash
	# left, whichever of it and hannoy_sweep() removed a sidecar
	my @before = @dirs_at_kill ? @dirs_at_kill : sidecar_dirs($node);
	@dirs_at_kill = ();
	my $swept = $node->safe_psql('postgres', 'SELECT hannoy_sweep()');
	my @expected = expected_sidecar_dirs($node);
	my @after = sidecar_dirs($node);
	is_deeply(\@after, \@expected,
		"$what: after hannoy_sweep() the sidecars are exactly those of the hannoy indexes");
	my %owned = map { $_ => 1 } @expected;
	my %left = map { $_ => 1 } @after;
	my @removed = grep { !$left{$_} } @before;
	is_deeply(\@removed, [ grep { !$owned{$_} } @before ],
		"$what: the sweeps removed exactly the sidecars no index owns");
	note sprintf('%s: %d rows in t, sweeps removed %d (hannoy_sweep() %d), checks took %.1f s; t_v: %s',
		$what, t_rows(), scalar(@removed), $swept, now_s() - $t0, $node->safe_psql('postgres', q{
			SELECT format('%s live, %s unindexed, %s tombstones, %s free ids, %s layers, entry point %s',
			              live_items, unindexed_rows, tombstones, free_ids, layers, entry_point)
			  FROM hannoy_index_stats('t_v')}));
	return scalar(@removed);
}

############################################################################
# Runs without a kill: baseline and the durations the kills are drawn in.
############################################################################

open_monitor();

# Rows in t now.
sub t_rows
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM t');
}

# The seconds each kind of work took without a kill, and for the work on t
# the rows t had then: a kill scales the duration by t's rows at its time.
my (%duration, %rows_then);
my ($kind, $job) = start_build();
$duration{create} = run_jobs('CREATE INDEX on built without a kill', $job);
my @jobs = start_inserts();
$duration{inserts} = run_jobs('insert streams without a kill', @jobs);
check_committed('insert streams without a kill', committed_ids(@jobs));
$rows_then{vacuum} = t_rows();
$duration{vacuum} = run_jobs('VACUUM without a kill', start_vacuum());
$rows_then{reindex} = t_rows();
($kind, $job) = start_build();
$duration{reindex} = run_jobs('REINDEX without a kill', $job);
note sprintf('durations without a kill: CREATE INDEX on built %.2f s, REINDEX of t %.2f s '
	  . '(%d rows), insert streams %.2f s, VACUUM %.2f s (%d rows before the DELETE)',
	$duration{create}, $duration{reindex}, $rows_then{reindex}, $duration{inserts},
	$duration{vacuum}, $rows_then{vacuum});
check_all('before any crash');

# The expected duration of work of $kind on t as it is now.
sub expected_duration
{
	my ($kind) = @_;
	return $duration{$kind} unless $rows_then{$kind};
	return $duration{$kind} * t_rows() / $rows_then{$kind};
}

############################################################################
# The kills.
############################################################################

# Kill k does kind $kinds[k]; within a kind, the j-th of n kills falls in
# the j-th n-th of the duration (in shuffled order), at a random place.
my @kinds = map { (qw(build inserts vacuum))[ $_ % 3 ] } 0 .. $KILLS - 1;
my %fractions;
for my $k (qw(build inserts vacuum))
{
	my $n = grep { $_ eq $k } @kinds;
	my @f = map { ($_ + rand()) / $n } 0 .. $n - 1;
	for (my $i = $#f; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@f[ $i, $j ] = @f[ $j, $i ];
	}
	$fractions{$k} = \@f;
}

my (%kills, $swept_total);
my $kills_during = 0;
for my $k (0 .. $KILLS - 1)
{
	my $work = $kinds[$k];
	my $fraction = shift @{ $fractions{$work} };
	my ($moment, $during, $label, %o);

	if ($work eq 'build')
	{
		# (t's rows are counted before REINDEX locks its index)
		my %estimate = map { $_ => expected_duration($_) } qw(create reindex);
		my ($what, $job) = start_build();
		# a little past the end too, to kill right after a commit
		($moment, $during) = kill_after(1.1 * $fraction * $estimate{$what}, $job);
		$label = $what eq 'create' ? 'CREATE INDEX' : 'REINDEX';
	}
	elsif ($work eq 'inserts')
	{
		my @jobs = start_inserts();
		($moment, $during) = kill_after($fraction * $duration{inserts}, @jobs);
		$o{committed} = committed_ids(@jobs);
		$label = 'insert streams';
	}
	else
	{
		my $estimate = expected_duration('vacuum');
		my $job = start_vacuum();
		($moment, $during) = kill_after(1.1 * $fraction * $estimate, $job);
		$label = 'VACUUM';
	}
	$kills{$label}++;
	$kills_during++ if $during;
	my $what = sprintf('kill %d (%s)', $k + 1, $label);
	note "$what: $moment";
	$swept_total += check_all($what, %o);
}
note sprintf('ran %d kills (%s) with seed %d, %d of them while the work still ran; '
	  . 'sweeps removed %d leftover sidecars',
	$KILLS, join(', ', map { "$kills{$_} during $_" } sort keys %kills),
	$SEED, $kills_during, $swept_total // 0);

############################################################################
# Freed TIDs reused by rows with NULL vectors and new vectors.
############################################################################

$node->safe_psql(
	'postgres', q{
	CREATE TABLE held AS SELECT id, ctid AS old_tid FROM t WHERE (hashint8(id + 4242) & 3) = 0;
	DELETE FROM t WHERE id IN (SELECT id FROM held);
	VACUUM (INDEX_CLEANUP ON) t;
	CREATE TABLE freed AS
	  SELECT format('(%s,%s)', blk, lp)::tid AS tid
	    FROM generate_series(0, pg_relation_size('t') / 8192 - 1) blk,
	         heap_page_items(get_raw_page('t', blk))
	   WHERE lp_flags = 0;
});
my $held = $node->safe_psql('postgres', 'SELECT count(*) FROM held');
my $freed = $node->safe_psql('postgres', 'SELECT count(*) FROM freed');
cmp_ok($freed, '>', 0, "VACUUM freed $freed line pointers after deleting $held rows");

# Rows with NULL vectors first (one per transaction, from two sessions), then
# rows with new vectors, as many as were deleted.
my $NULL_LO = 50_000_000;
my $NEW_LO = 60_000_000;
my @fill = map {
	my $s = $_;
	start_job("null$s",
		join('', map { "INSERT INTO t VALUES (" . ($NULL_LO + 1000 * $s + $_) . ", NULL);\n" } 1 .. 300))
} 0 .. 1;
run_jobs('rows with NULL vectors', @fill);
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, vec(g) FROM generate_series($NEW_LO + 1, $NEW_LO + $held) g");

my ($reused_null, $reused_new) = split /\|/, $node->safe_psql(
	'postgres', qq{
	SELECT count(*) FILTER (WHERE t.v IS NULL), count(*) FILTER (WHERE t.id > $NEW_LO)
	  FROM t JOIN freed f ON f.tid = t.ctid
	 WHERE t.id >= $NULL_LO});
cmp_ok($reused_null, '>', 0, "rows with NULL vectors took $reused_null freed TIDs");
cmp_ok($reused_new, '>', 0, "rows with new vectors took $reused_new freed TIDs");

# The old vectors of the rows that held the reused TIDs.
my $reused_probes = q{
	SELECT h.id, vec(h.id) AS pv FROM held h JOIN t n ON n.ctid = h.old_tid
	 WHERE n.id >= 50000000};
my ($bad, $probes) = out_of_order_probes($reused_probes);
cmp_ok($probes, '>', 0, "$probes deleted rows' TIDs now hold other rows");
is(scalar(@$bad), 0,
	'the old vectors of reused TIDs find rows in the order of their current vectors')
  or diag('probe id|distances: ' . join("\n", @{$bad}[ 0 .. min($#$bad, 9) ]));

# Rows with NULL vectors in freed TIDs come after every row with a vector,
# also when queried with the old vector of their TID.
my @null_probes = split /\n/, $node->safe_psql(
	'postgres', q{
	SELECT h.id FROM held h JOIN t n ON n.ctid = h.old_tid
	 WHERE n.v IS NULL ORDER BY h.id LIMIT 20});
my $early = 0;
for my $probe (@null_probes, 123456789)
{
	my $kinds = $node->safe_psql('postgres',
		"SET enable_seqscan = off; SELECT string_agg(CASE WHEN v IS NULL THEN 'n' ELSE 'v' END, '') "
		  . "FROM (SELECT v FROM t ORDER BY v <-> vec($probe)) s");
	$early++ if $kinds =~ /n.*v/;
}
is($early, 0, sprintf('rows without a vector come last in %d unbounded index scans by the old '
	  . 'vectors of their TIDs (and one by another vector)', scalar(@null_probes)));

check_all('after TID reuse');

############################################################################
# The server log.
############################################################################

# A session that connects while the server stops is turned away: expected.
my $problems = log_problems($node, allow => qr/FATAL:  the database system is shutting down$/);
is(scalar(@$problems), 0,
	'the server logged no WARNING, ERROR, FATAL or PANIC (but refused connections while it stopped)')
  or diag(join("\n", @{$problems}[ 0 .. min($#$problems, 19) ]));

note sprintf('070_crash: %d kills, %.1f s in all', $KILLS, now_s() - $t_start);
close_monitor();
$node->stop;
done_testing();
