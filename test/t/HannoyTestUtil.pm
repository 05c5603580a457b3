# HannoyTestUtil: helpers shared by hannoy's TAP tests (test/t/*.pl).
#
# Starts nodes that preload hannoy, reads the Fashion-MNIST IDX files,
# writes COPY files, generates seeded vectors, and compares an index scan's
# answer with the exact (sequential scan) answer.
package HannoyTestUtil;

use strict;
use warnings;

use Exporter 'import';
use IO::Uncompress::Gunzip qw($GunzipError);
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

our @EXPORT = qw(
  hannoy_node
  hannoy_standby
  index_used_soon
  recall_by_distance
  window_problems
  fashion_images
  vector_literal
  bits_literal
  write_copy_file
  seeded_vectors
  sidecar_dirs
  elapsed_since
  now_s
  wait_until
  scan_ids
  compare_id_sets
  self_lookup_misses
  rows_found_by_vectors
  run_psql_script
);

our $FASHION_DIR = '/usr/share/datasets/fashion-mnist';

# Creates, configures and starts a node that preloads hannoy (unless
# preload => 0), with any extra postgresql.conf lines in conf, and installs
# the extension in the postgres database (unless create_extension => 0).
# JIT is off: the tests force plans with enable_seqscan = off, whose huge
# costs would make every statement pay tens of milliseconds of compilation.
sub hannoy_node
{
	my ($name, %opts) = @_;
	my $preload = exists $opts{preload} ? $opts{preload} : 1;
	my $create = exists $opts{create_extension} ? $opts{create_extension} : $preload;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf('postgresql.conf', 'jit = off');
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'hannoy'")
	  if $preload;
	$node->append_conf('postgresql.conf', $opts{conf}) if defined $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION hannoy') if $create;
	return $node;
}

# Starts a hot standby named $name streaming from $primary: lets the
# primary accept replication connections, takes its base backup (named
# 'base') and starts the standby from it.  Returns the standby.
sub hannoy_standby
{
	my ($primary, $name) = @_;

	$primary->append_conf('pg_hba.conf', 'local replication all trust');
	$primary->reload;
	$primary->backup('base');
	my $standby = PostgreSQL::Test::Cluster->new($name);
	$standby->init_from_backup($primary, 'base', has_streaming => 1);
	$standby->start;
	return $standby;
}

# The recall@$k of the rows $got returned for the queries in $queries (a
# list of query numbers) against the exact answers $exact: both map a
# query number to a list of [id, distance], $exact's sorted by distance.
# A returned row counts once, when its distance is at most the k-th exact
# distance (so ties at the k-th place count as hits).
sub recall_by_distance
{
	my ($exact, $got, $k, $queries) = @_;
	my $hits = 0;

	for my $n (@$queries)
	{
		my $kth = $exact->{$n}[ $k - 1 ][1];
		my %seen;
		for my $row (@{ $got->{$n} })
		{
			$hits++ if !$seen{ $row->[0] }++ && $row->[1] <= $kth;
		}
	}
	return $hits / ($k * scalar(@$queries));
}

# Checks the first windows $got of re-ranked scans (query number -> list
# of [id, distance]) for the queries in $queries, each expected to hold
# $first rows, against the exact distances $exact_of (query number -> id
# -> distance, for the rows the sequential scan measured).  Returns a hash
# of counts: short (queries with another number of rows), disorder (rows
# nearer than the row before them; the first five are logged under
# $label), wrong (rows whose distance differs from the exact one),
# checked (rows compared) and rows (rows returned).
sub window_problems
{
	my ($got, $queries, $first, $exact_of, $label) = @_;
	my %c = (short => 0, disorder => 0, wrong => 0, checked => 0, rows => 0);

	for my $n (@$queries)
	{
		my $list = $got->{$n};
		$c{short}++ if @$list != $first;
		for my $j (1 .. $#$list)
		{
			next if $list->[$j][1] >= $list->[ $j - 1 ][1];
			$c{disorder}++;
			diag("$label, query $n: row $j at $list->[$j][1] after $list->[$j - 1][1]")
			  if $c{disorder} <= 5;
		}
		for my $row (@$list)
		{
			my $d = $exact_of->{$n}{ $row->[0] };
			$c{rows}++;
			next unless defined $d;
			$c{checked}++;
			$c{wrong}++ if $d != $row->[1];
		}
	}
	return \%c;
}

# Reads the first $count images of a Fashion-MNIST IDX image file
# ('train' or 't10k'), skipping the first $skip, and returns a reference to
# a list of references to lists of pixel values (0..255).
sub fashion_images
{
	my ($set, $count, $skip) = @_;
	my $path = "$FASHION_DIR/$set-images-idx3-ubyte.gz";
	my $gz = IO::Uncompress::Gunzip->new($path)
	  or die "cannot open $path: $GunzipError";
	my $header = _read_exactly($gz, 16, $path);
	my ($magic, $n, $rows, $cols) = unpack('N4', $header);

	die "$path: bad IDX magic $magic" unless $magic == 0x00000803;
	$skip //= 0;
	die "$path: has $n images, not " . ($skip + $count) if $skip + $count > $n;
	my $size = $rows * $cols;
	_read_exactly($gz, $size * $skip, $path) if $skip > 0;
	my $data = _read_exactly($gz, $size * $count, $path);
	$gz->close;

	my @images;
	for my $i (0 .. $count - 1)
	{
		push @images, [ unpack('C*', substr($data, $i * $size, $size)) ];
	}
	return \@images;
}

# Reads exactly $len bytes from a gunzip stream, or dies.
sub _read_exactly
{
	my ($gz, $len, $path) = @_;
	my $buf = '';

	while (length($buf) < $len)
	{
		my $got = $gz->read(my $chunk, $len - length($buf));
		die "$path: read failed: $GunzipError" if $got < 0;
		die "$path: truncated" if $got == 0;
		$buf .= $chunk;
	}
	return $buf;
}

# Returns a real[] literal '{v1,...}' (no quotes) for a list of numbers.
sub vector_literal
{
	my ($vec) = @_;
	return '{' . join(',', @$vec) . '}';
}

# Returns a bit-string literal ('0101...') of pixel > 127 for an image.
sub bits_literal
{
	my ($vec) = @_;
	return join('', map { $_ > 127 ? '1' : '0' } @$vec);
}

# Writes rows (references to lists of already formatted column texts) into
# $dir/$name as a tab-separated COPY file and returns its path.
sub write_copy_file
{
	my ($dir, $name, $rows) = @_;
	my $path = "$dir/$name";

	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh join("\t", @$_), "\n" for @$rows;
	close($fh) or die "cannot close $path: $!";
	chmod 0644, $path;
	return $path;
}

# Returns a reference to $count seeded pseudo-random vectors of $dims
# components in [-1, 1) with 4 decimals (a small linear congruential
# generator, so every run and every platform gets the same vectors).
sub seeded_vectors
{
	my ($count, $dims, $seed) = @_;
	my $state = $seed & 0x7fffffff;
	my @vecs;

	for (1 .. $count)
	{
		my @v;
		for (1 .. $dims)
		{
			$state = (1103515245 * $state + 12345) % 2147483648;
			push @v, sprintf('%.4f', ($state / 2147483648) * 2 - 1);
		}
		push @vecs, \@v;
	}
	return \@vecs;
}

# Returns the sorted names of the sidecar directories in $PGDATA/hannoy.
sub sidecar_dirs
{
	my ($node) = @_;
	my $root = $node->data_dir . '/hannoy';

	return () unless -d $root;
	opendir(my $dh, $root) or die "cannot list $root: $!";
	my @dirs = sort grep { !/^\./ && -d "$root/$_" } readdir($dh);
	closedir($dh);
	return @dirs;
}

# Returns the ids that
#   SELECT id FROM $table ORDER BY $col $op $query
# returns (no LIMIT) as an index scan (enable_seqscan = off) when $how is
# 'index', or as a sequential scan when $how is 'seq', plus the plan's text.
# Dies unless the plan is the kind asked for.
sub scan_ids
{
	my ($node, $table, $how, %o) = @_;
	my $col = $o{col} // 'v';
	my $op = $o{op} // '<->';
	my $query = $o{query};
	my $db = $o{db} // 'postgres';
	my $settings = $o{settings} // '';
	my $sql;

	if ($how eq 'index')
	{
		$settings .= ' SET enable_seqscan = off; SET enable_bitmapscan = off;';
		$sql = "SELECT id FROM $table ORDER BY $col $op $query";
	}
	else
	{
		$settings .= ' SET enable_indexscan = off; SET enable_bitmapscan = off;'
		  . ' SET enable_indexonlyscan = off;';
		$sql = "SELECT id FROM $table";
	}
	my $plan = $node->safe_psql($db, "$settings EXPLAIN (COSTS OFF) $sql");
	if ($how eq 'index')
	{
		die "not an index scan on $table:\n$plan" unless $plan =~ /Index Scan using \S+ on \Q$table\E\b/;
	}
	else
	{
		die "not a seq scan on $table:\n$plan" unless $plan =~ /Seq Scan on \Q$table\E\b/;
	}
	my $out = $node->safe_psql($db, "$settings $sql");
	return ([ split /\n/, $out ], $plan);
}

# Checks that the list of ids $got holds each id of $want exactly once and
# nothing else; reports counts and a few examples on failure.
sub compare_id_sets
{
	my ($got, $want, $name) = @_;
	my (%g, %w, @dup, @missing, @extra);

	for (@$got)
	{
		push @dup, $_ if $g{$_}++;
	}
	$w{$_}++ for @$want;
	@missing = grep { !$g{$_} } sort { $a <=> $b } keys %w;
	@extra = grep { !$w{$_} } sort { $a <=> $b } keys %g;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $ok = is(
		sprintf('rows %d, duplicates %d, missing %d, extra %d',
			scalar(@$got), scalar(@dup), scalar(@missing), scalar(@extra)),
		sprintf('rows %d, duplicates 0, missing 0, extra 0', scalar(keys %w)),
		$name);
	unless ($ok)
	{
		diag('duplicates: ' . join(',', @dup[ 0 .. ($#dup < 9 ? $#dup : 9) ])) if @dup;
		diag('missing: ' . join(',', @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ])) if @missing;
		diag('extra: ' . join(',', @extra[ 0 .. ($#extra < 9 ? $#extra : 9) ])) if @extra;
	}
	return $ok;
}

# Returns the ids of the rows of $table (restricted by $where, if given)
# that are not among the first $k rows (default 10) of an index scan
# ORDER BY v <-> their own vector, and the plan of that lookup.  Dies unless
# the lookup uses an index scan on $table.
sub self_lookup_misses
{
	my ($node, $table, %o) = @_;
	my $k = $o{k} // 10;
	my $db = $o{db} // 'postgres';
	my $settings = $o{settings} // '';
	my $cond = "NOT EXISTS (SELECT 1 FROM (SELECT b.id FROM $table b ORDER BY b.v <-> a.v "
	  . "LIMIT $k) s WHERE s.id = a.id)";
	$cond = "($o{where}) AND $cond" if defined $o{where};
	my $sql = "SELECT a.id FROM $table a WHERE $cond ORDER BY a.id";
	my $plan = $node->safe_psql($db, "$settings EXPLAIN (COSTS OFF) $sql");
	die "the lookup is not an index scan on $table:\n$plan"
	  unless $plan =~ /Index Scan using \S+ on \Q$table\E b\b/;
	my $out = $node->safe_psql($db, "$settings $sql");
	return ([ split /\n/, $out ], $plan);
}

# Returns the ids of $table's rows that appear among the first $k rows
# (default 10) of an index scan ORDER BY v <-> some vector of table $probe
# (id, v): used to show that rows never committed are never returned.
sub rows_found_by_vectors
{
	my ($node, $table, $probe, %o) = @_;
	my $k = $o{k} // 10;
	my $db = $o{db} // 'postgres';
	my $sql = "SELECT DISTINCT s.id FROM $probe p CROSS JOIN LATERAL "
	  . "(SELECT b.id FROM $table b ORDER BY b.v <-> p.v LIMIT $k) s "
	  . "WHERE s.id IN (SELECT id FROM $probe) ORDER BY 1";
	my $plan = $node->safe_psql($db, "EXPLAIN (COSTS OFF) $sql");
	die "the probe is not an index scan on $table:\n$plan"
	  unless $plan =~ /Index Scan using \S+ on \Q$table\E b\b/;
	return [ split /\n/, $node->safe_psql($db, $sql) ];
}

# Starts psql on a script file in the background (IPC::Run) and returns the
# harness and references to its stdout and stderr; finish it with
# $h->finish.  With on_error_stop => 0 the script goes on after an error.
sub run_psql_script
{
	my ($node, $file, %o) = @_;
	my $db = $o{db} // 'postgres';
	my $stop = $o{on_error_stop} // 1;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', "ON_ERROR_STOP=$stop",
			'-d', $node->connstr($db), '-f', $file
		],
		'<', \undef, '>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

# Returns the current time in seconds (fractional).
sub now_s
{
	return Time::HiRes::time();
}

# Waits up to $secs seconds until $cond returns true, polling every 50 ms;
# returns its last value.
sub wait_until
{
	my ($secs, $cond) = @_;
	my $t0 = now_s();
	my $ok;
	until (($ok = $cond->()) || now_s() - $t0 > $secs)
	{
		Time::HiRes::usleep(50_000);
	}
	return $ok;
}

# Waits up to $secs seconds (default 120) until $node's plan of $sql (a
# query, EXPLAINed as is) is an index scan using $index; returns whether it
# came.  A standby uses an index it rebuilds from the table only once the
# rebuild has ended.
sub index_used_soon
{
	my ($node, $sql, $index, $secs) = @_;
	return wait_until(
		$secs // 120,
		sub {
			$node->safe_psql('postgres', "EXPLAIN (COSTS OFF) $sql") =~ /Index Scan using \Q$index\E\b/;
		});
}

# Returns the seconds elapsed since $t0, rounded to milliseconds.
sub elapsed_since
{
	my ($t0) = @_;
	return sprintf('%.3f', Time::HiRes::time() - $t0);
}

# Helpers of the crash and concurrency tests (070, 080).
push @EXPORT, qw(
  expected_sidecar_dirs
  verify_problems
  log_problems
);

# Returns the sorted names the sidecar directories of every permanent
# hannoy index of every database that has the extension should have:
# <tablespace>_<database>_<relfilenode>.
sub expected_sidecar_dirs
{
	my ($node) = @_;
	my @names;
	my @dbs = split /\n/,
	  $node->safe_psql('postgres', 'SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1');

	for my $db (@dbs)
	{
		next
		  unless $node->safe_psql($db,
			"SELECT count(*) FROM pg_extension WHERE extname = 'hannoy'");
		push @names, split /\n/, $node->safe_psql($db, q{
			SELECT format('%s_%s_%s',
			              CASE WHEN c.reltablespace = 0 THEN d.dattablespace
			                   ELSE c.reltablespace END,
			              d.oid, pg_relation_filenode(c.oid))
			  FROM pg_class c JOIN pg_am a ON a.oid = c.relam
			  JOIN pg_database d ON d.datname = current_database()
			 WHERE a.amname = 'hannoy' AND c.relkind = 'i' AND c.relpersistence <> 't'});
	}
	return sort @names;
}

# Returns the rows hannoy_verify reports for $index, one 'kind|item|detail'
# string each (none when the index is healthy).
sub verify_problems
{
	my ($node, $index, %o) = @_;
	my $out = $node->safe_psql($o{db} // 'postgres',
		"SELECT kind, item, detail FROM hannoy_verify('$index') ORDER BY item, kind");
	return [ grep { $_ ne '' } split /\n/, $out ];
}

# Returns the lines of $node's server log from byte $offset on (default:
# the whole log) that report a WARNING, ERROR, FATAL or PANIC, or a
# deadlock, leaving out those matching the regular expression $allow.
sub log_problems
{
	my ($node, %o) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $o{offset} // 0);
	my @lines = grep { /\b(WARNING|ERROR|FATAL|PANIC):|deadlock detected/ } split /\n/, $log;
	@lines = grep { !/$o{allow}/ } @lines if defined $o{allow};
	return \@lines;
}

1;
