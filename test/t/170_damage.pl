# A damaged sidecar never takes the server down (DESIGN.md "Damaged sidecars").
#
# Damages the sidecar of one of two hannoy indexes at random, once per trial,
# HANNOY_DAMAGE_TRIALS times (default 20; 200 for the long run), from a
# seeded generator (HANNOY_DAMAGE_SEED, default 170), with the server
# running.  The kinds of damage take turns:
#   garbage   one random page other than the two meta pages overwritten
#             with random bytes;
#   meta      one of the two meta pages overwritten with random bytes;
#   truncate  data.mdb truncated to a random size below its own;
#   flip      1 to 8 random bits flipped anywhere in data.mdb;
#   swap      data.mdb overwritten with the other index's data.mdb.
# The file is changed in place, so a session that has the sidecar open sees
# the damage as a new one does.  After each damage one test session that
# lives through the whole run, and then fresh connections, each run
# hannoy_verify, an index scan, an insert, a DELETE and VACUUM,
# hannoy_verify again, hannoy_index_stats and hannoy_index_size.
#
# Proves that:
#  - no backend crashes: the server log has no "terminated by signal",
#    "exited with exit code" or "reinitializing", and the test session keeps
#    its pg_backend_pid() through every trial;
#  - every call returns a result or an error (an error that names the
#    damage says so with a REINDEX hint);
#  - when the damage changed a stored record (mdb_dump of the damaged file
#    fails or differs from the dump of the file before the damage),
#    hannoy_verify reports it: a row or an error;
#  - REINDEX restores exact answers: the top 10 at hannoy.ef_search = 1000
#    equal the exact top 10.
#
# The counts of each kind, of errors and of detections are printed with
# diag.
use strict;
use warnings;

use File::Copy qw(copy);
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $TRIALS = $ENV{HANNOY_DAMAGE_TRIALS} // 20;
my $SEED = $ENV{HANNOY_DAMAGE_SEED} // 170;
my @KINDS = qw(garbage flip truncate meta swap);

# A small seeded generator (the same numbers on every platform and Perl).
my $rng = $SEED & 0x7fffffff;

sub rnd
{
	my ($n) = @_;
	$rng = (1103515245 * $rng + 12345) % 2147483648;
	return int(($rng / 2147483648) * $n);
}

sub rnd_bytes
{
	my ($n) = @_;
	return pack('C*', map { rnd(256) } 1 .. $n);
}

# A crash must not hide behind a restart: the postmaster restarts after
# one, so the test can count crashes, and the log shows each.
my $node = hannoy_node('damage',
	conf => "autovacuum = off\nrestart_after_crash = on\nstatement_timeout = '120s'");

my %tables = (
	small => { dims => 24, rows => 3000, opclass => '', op => '<->' },
	wide => { dims => 600, rows => 300, opclass => 'real_cosine_ops', op => '<=>' });
for my $t (sort keys %tables)
{
	my $d = $tables{$t}{dims};
	$node->safe_psql('postgres', qq{
		SELECT setseed(0.17);
		CREATE TABLE $t (id int, v real[]);
		INSERT INTO $t SELECT i, array(SELECT (random() * 2 - 1)::real
		                                 FROM generate_series(1, $d) WHERE i > 0)
		  FROM generate_series(1, $tables{$t}{rows}) i;
		CREATE INDEX ${t}_v ON $t USING hannoy (v $tables{$t}{opclass});});
	$tables{$t}{next_id} = $tables{$t}{rows} + 1;
	$tables{$t}{query} = "'" . vector_literal([ map { sprintf('%.3f', (rnd(2000) - 1000) / 1000) } 1 .. $d ]) . "'";
}

# The path of the data.mdb of $table's index.
sub data_file
{
	my ($table) = @_;
	my $dir = $node->safe_psql('postgres', qq{
		SELECT format('%s_%s_%s', d.dattablespace, d.oid, pg_relation_filenode('${table}_v'))
		  FROM pg_database d WHERE d.datname = current_database()});
	return $node->data_dir . "/hannoy/$dir/data.mdb";
}

# mdb_dump of a copy of $file: the dump, or undef when it fails.
my $tmp = PostgreSQL::Test::Utils::tempdir;

sub dump_of
{
	my ($file, $name) = @_;
	my $copy = "$tmp/$name.mdb";
	unlink $copy, "$copy-lock";
	copy($file, $copy) or die "cannot copy $file: $!";
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run([ 'mdb_dump', '-n', '-a', $copy ],
			'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	};
	return $ok ? $out : undef;
}

# Damages $file as $kind says; returns a description.
sub damage
{
	my ($file, $kind, $other) = @_;
	my $size = -s $file;
	my $pages = int($size / 4096);
	if ($kind eq 'truncate')
	{
		my $to = rnd($size);
		truncate($file, $to) or die "cannot truncate $file: $!";
		return "truncated from $size to $to bytes";
	}
	open(my $fh, '+<:raw', $file) or die "cannot open $file: $!";
	my $what;
	if ($kind eq 'garbage' || $kind eq 'meta')
	{
		my $page = $kind eq 'meta' ? rnd(2) : 2 + rnd($pages - 2);
		sysseek($fh, $page * 4096, 0);
		syswrite($fh, rnd_bytes(4096)) == 4096 or die "cannot write $file: $!";
		$what = "page $page of $pages overwritten with random bytes";
	}
	elsif ($kind eq 'flip')
	{
		my $n = 1 + rnd(8);
		my @at;
		for (1 .. $n)
		{
			my $bit = rnd(8);
			my $off = rnd($size);
			sysseek($fh, $off, 0);
			sysread($fh, my $b, 1) == 1 or die "cannot read $file: $!";
			sysseek($fh, $off, 0);
			syswrite($fh, chr(ord($b) ^ (1 << $bit))) == 1 or die "cannot write $file: $!";
			push @at, "$off.$bit";
		}
		$what = "$n bits flipped at " . join(' ', @at);
	}
	else
	{
		my $bytes = slurp_file($other);
		sysseek($fh, 0, 0);
		syswrite($fh, $bytes) == length($bytes) or die "cannot write $file: $!";
		truncate($fh, length($bytes)) or die "cannot truncate $file: $!";
		$what = "overwritten with the other index's data.mdb";
	}
	close($fh) or die "cannot close $file: $!";
	return $what;
}

# The test session; reopened only when a crash killed it.
my $session;
my $session_pid;

sub open_session
{
	# after a crash the server first recovers
	$node->poll_query_until('postgres', 'SELECT true');
	$session = $node->background_psql('postgres', on_error_stop => 0);
	# the session's timeout counts per query: it lives through the whole run,
	# longer than the default timeout, which would otherwise expire under it
	$session->set_query_timer_restart();
	$session_pid = $session->query_safe('SELECT pg_backend_pid()');
	$session->{stderr} = '';
}
open_session();

# Runs $sql in the test session ('session') or a new connection ('fresh');
# returns (ok, stdout, stderr, lost): ok when no ERROR came, lost when the
# connection died.
sub run_sql
{
	my ($where, $sql) = @_;
	if ($where eq 'fresh')
	{
		my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 0);
		return ($err !~ /\bERROR:/, $out, $err, $ret == 2 || $err =~ /connection to server was lost|server closed the connection/);
	}
	my ($out, $err) = ('', '');
	my $ok = eval {
		$out = $session->query($sql);
		$err = $session->{stderr};
		$session->{stderr} = '';
		1;
	};
	return (0, '', $@, 1) unless $ok;
	return ($err !~ /\bERROR:/, $out, $err, $err =~ /connection to server was lost|server closed the connection/);
}

my (%count, %errors, %detected, %changed, @missed, @crashed, @lost, @odd_errors);
my $log_offset = -s $node->logfile;

for my $trial (1 .. $TRIALS)
{
	my $kind = $KINDS[ ($trial - 1) % @KINDS ];
	my $table = (rnd(2) == 0) ? 'small' : 'wide';
	my $other = $table eq 'small' ? 'wide' : 'small';
	my $t = $tables{$table};
	my $file = data_file($table);

	# the test session has the sidecar open (and a kept scan) before the damage
	run_sql('session', "SET enable_seqscan = off; SELECT id FROM $table ORDER BY v $t->{op} $t->{query} LIMIT 3");
	my $before = dump_of($file, 'before');
	my $what = damage($file, $kind, data_file($other));
	my $after = dump_of($file, 'after');
	my $changed = !defined($after) || !defined($before) || $after ne $before;
	$count{$kind}++;
	$changed{$kind}++ if $changed;
	note("trial $trial: $table: $kind: $what" . ($changed ? ' (records changed)' : ''));

	for my $where ('session', 'fresh')
	{
		my $id = $t->{next_id}++;
		my $del = 1 + rnd($t->{rows});
		my $vec = "'" . vector_literal([ map { sprintf('%.3f', (rnd(2000) - 1000) / 1000) } 1 .. $t->{dims} ]) . "'";
		my @calls = (
			[ verify => "SELECT kind, item, detail FROM hannoy_verify('${table}_v')" ],
			[ scan => "SET enable_seqscan = off; SELECT id FROM $table ORDER BY v $t->{op} $t->{query} LIMIT 10" ],
			[ insert => "INSERT INTO $table VALUES ($id, $vec)" ],
			[ vacuum => "DELETE FROM $table WHERE id = $del; VACUUM $table" ],
			[ verify_again => "SELECT kind, item, detail FROM hannoy_verify('${table}_v')" ],
			[ stats => "SELECT * FROM hannoy_index_stats('${table}_v')" ],
			[ size => "SELECT hannoy_index_size('${table}_v')" ]);
		for my $call (@calls)
		{
			my ($name, $sql) = @$call;
			my ($ok, $out, $err, $gone) = run_sql($where, $sql);
			if ($gone)
			{
				push @lost, "trial $trial ($kind, $table, $where): $name: connection lost";
				open_session() if $where eq 'session';
				last;
			}
			$errors{"$name"}++ unless $ok;
			# an error about the damage names the index and hints at REINDEX
			push @odd_errors, "trial $trial ($kind, $where) $name: $err"
			  if !$ok && $err =~ /\b(index_corrupted|LMDB|corrupt|damaged|malformed)/i
			  && !($err =~ /\Q${table}_v\E/ && $err =~ /HINT:.*REINDEX/s);
			if ($name eq 'verify' && $where eq 'session')
			{
				my $reported = !$ok || $out ne '';
				$detected{$kind}++ if $reported && $changed;
				push @missed, "trial $trial: $table: $kind: $what" if $changed && !$reported;
			}
		}
	}

	my $log = slurp_file($node->logfile, $log_offset);
	$log_offset = -s $node->logfile;
	if ($log =~ /terminated by signal|exited with exit code|reinitializing/)
	{
		my @lines = grep { /terminated by signal|exited with exit code|reinitializing/ } split /\n/, $log;
		push @crashed, "trial $trial: $table: $kind: $what: $lines[0]";
		$node->poll_query_until('postgres', 'SELECT true');
		$log_offset = -s $node->logfile;
	}
	my ($pid) = eval { $session->query('SELECT pg_backend_pid()') };
	my $failure = $@;
	my $pid_err = $session ? $session->{stderr} : '';
	$session->{stderr} = '' if $session;
	if (!defined($pid) || $pid ne $session_pid)
	{
		my $got = defined($pid) ? "pg_backend_pid() gave '$pid'" : "the query failed: $failure";
		$got .= ", stderr '$pid_err'" if $pid_err ne '';
		$got .= "; the server log shows its exit: $1" if $log =~ /^(.*\bPID $session_pid\b.*)$/m;
		push @lost, "trial $trial: the test session's backend changed ($got, expected $session_pid)"
		  unless grep { /^trial $trial / } @lost;
		open_session();
	}

	# REINDEX makes the index exact again
	my ($ok, $out, $err) = run_sql('fresh', "REINDEX INDEX ${table}_v");
	if (!$ok)
	{
		fail("trial $trial: REINDEX INDEX ${table}_v: $err");
		next;
	}
	my $exact = $node->safe_psql('postgres', qq{
		SET enable_indexscan = off; SET enable_bitmapscan = off;
		SELECT id FROM $table ORDER BY v $t->{op} $t->{query}, id LIMIT 10});
	my $found = $node->safe_psql('postgres', qq{
		SET enable_seqscan = off; SET hannoy.ef_search = 1000;
		SELECT id FROM $table ORDER BY v $t->{op} $t->{query} LIMIT 10});
	is($found, $exact, "trial $trial: after REINDEX the top 10 at ef_search 1000 are exact ($table)")
	  or diag("trial $trial: $kind: $what");
}

diag(sprintf('%d trials (seed %d): %s', $TRIALS, $SEED,
	join(', ', map { sprintf('%s %d (records changed %d, verify reported %d)', $_, $count{$_} // 0, $changed{$_} // 0, $detected{$_} // 0) } @KINDS)));
diag('calls that gave an error: ' . join(', ', map { "$_ $errors{$_}" } sort keys %errors));
diag("crashed: $_") for @crashed;
diag("lost: $_") for @lost;
diag("missed: $_") for @missed;
diag("error without index name or hint: $_") for @odd_errors[ 0 .. ($#odd_errors < 9 ? $#odd_errors : 9) ];
is(scalar(@crashed), 0, 'no backend crashed');
is(scalar(@lost), 0, 'the test session survived every trial');
is(scalar(@missed), 0, 'hannoy_verify reported every damage that changed a stored record');
is(scalar(@odd_errors), 0, 'every error about the damage names the index and hints at REINDEX');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|exited with exit code|reinitializing/, 'the server log shows no crash');

$session->quit;
$node->stop;
done_testing();
