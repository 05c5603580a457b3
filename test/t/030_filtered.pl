# Filtered and unbounded scans: DESIGN.md "Complete scans".
#
# A 20,000-row table of seeded 32-d vectors with a category column: ten
# categories of about 10% each (id % 10), and one rare category (99) of 20
# rows (0.1%).  With hannoy.ef_search = 10, proves that:
#  - an unbounded ordered index scan returns all 20,000 rows, each once, the
#    same set as a sequential scan: the scan resumes past ef and never stops
#    early;
#  - WHERE category = X ORDER BY v <-> q LIMIT 10, as an index scan with the
#    filter on top, returns exactly 10 rows, all in the category, at 10% and
#    at 0.1% selectivity (where most of the index must be walked), and with
#    LIMIT 30 at 0.1% returns all 20 rows of the category;
#  - a LATERAL join (a nested loop that rescans the index 400 times, with
#    filters of both selectivities and scans that run past the graph)
#    returns the right number of rows per probe, all matching the filter,
#    none twice, the same rows in the same order as a fresh scan of the same
#    query, every row of the rare category when the LIMIT exceeds it, and
#    a recall against the exact answers of at least 0.9.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $ROWS = 20_000;
my $DIMS = 32;
my $RARE = 99;

my $node = hannoy_node('filtered');
my $dir = PostgreSQL::Test::Utils::tempdir;

my $t0 = now_s();
my $vecs = seeded_vectors($ROWS, $DIMS, 30);
my $i = 0;
my $copy = write_copy_file(
	$dir, 't.copy',
	[
		map {
			$i++;
			[ $i, ($i % 1000 == 7 ? $RARE : $i % 10), vector_literal($_) ]
		} @$vecs
	]);
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE t (id int PRIMARY KEY, category int NOT NULL, v real[] NOT NULL);
	COPY t FROM '$copy';
	ANALYZE t;
});
is($node->safe_psql('postgres', "SELECT count(*) FROM t WHERE category = $RARE"),
	20, 'the rare category has 20 rows (0.1%)');
note 'data loaded in ' . elapsed_since($t0) . ' s';

$t0 = now_s();
$node->safe_psql('postgres', 'CREATE INDEX t_v ON t USING hannoy (v)');
note 'index built in ' . elapsed_since($t0) . ' s';

my $EF = 'SET hannoy.ef_search = 10;';
my $FORCE = "$EF SET enable_seqscan = off; SET enable_bitmapscan = off;";
my @queries = map { q{'} . vector_literal($_) . q{'::real[]} } @{ seeded_vectors(3, $DIMS, 31) };

############################################################################
# Unbounded ordered scans.
############################################################################

my ($by_seq) = scan_ids($node, 't', 'seq');
for my $n (0 .. $#queries)
{
	my $q = $queries[$n];
	my $plan = $node->safe_psql('postgres',
		"$FORCE EXPLAIN (COSTS OFF) SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> $q) s");
	like($plan, qr/Index Scan using t_v on t/, "query $n: the unbounded count uses the index");
	$t0 = now_s();
	is( $node->safe_psql(
			'postgres', "$FORCE SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> $q) s"),
		$ROWS,
		"query $n: an unbounded index scan at ef_search 10 returns all $ROWS rows");
	note "query $n: unbounded count in " . elapsed_since($t0) . ' s';
	my ($by_index) = scan_ids($node, 't', 'index', query => $q, settings => $EF);
	compare_id_sets($by_index, $by_seq,
		"query $n: the unbounded index scan returns the seq scan's rows");
}

############################################################################
# Filtered scans with a LIMIT.
############################################################################

# Runs WHERE category = $cat ORDER BY v <-> $q LIMIT $limit as a forced
# index scan; checks the plan and returns [[id, category], ...].
sub filtered
{
	my ($q, $cat, $limit, $name) = @_;
	my $sql = "SELECT id, category FROM t WHERE category = $cat ORDER BY v <-> $q LIMIT $limit";
	my $plan = $node->safe_psql('postgres', "$FORCE EXPLAIN (COSTS OFF) $sql");
	ok( $plan =~ /Index Scan using t_v on t/
		  && $plan =~ /Filter: \(category = $cat\)/
		  && $plan !~ /Sort/,
		"$name: the plan is the index scan with the filter on top")
	  or diag($plan);
	my $t = now_s();
	my @rows = map { [ split /\|/ ] } split /\n/, $node->safe_psql('postgres', "$FORCE $sql");
	note "$name: " . scalar(@rows) . ' rows in ' . elapsed_since($t) . ' s';
	return \@rows;
}

# Returns the exact answer of the filtered query (sequential scan).
sub filtered_exact
{
	my ($q, $cat, $limit) = @_;
	return [
		split /\n/,
		$node->safe_psql('postgres',
			    'SET enable_indexscan = off; '
			  . "SELECT id FROM t WHERE category = $cat ORDER BY v <-> $q LIMIT $limit")
	];
}

my %rare_ids = map { $_ => 1 } split /\n/,
  $node->safe_psql('postgres', "SELECT id FROM t WHERE category = $RARE");

for my $n (0 .. $#queries)
{
	my $q = $queries[$n];
	for my $case ([ 3, '10%' ], [ $RARE, '0.1%' ])
	{
		my ($cat, $sel) = @$case;
		my $name = "query $n, $sel selectivity, LIMIT 10";
		my $rows = filtered($q, $cat, 10, $name);
		is(scalar(@$rows), 10, "$name: returns exactly 10 rows");
		is(scalar(grep { $_->[1] == $cat } @$rows), scalar(@$rows),
			"$name: every row has category $cat");
		my %seen;
		is(scalar(grep { !$seen{ $_->[0] }++ } @$rows), scalar(@$rows), "$name: no row twice");
		my %exact = map { $_ => 1 } @{ filtered_exact($q, $cat, 10) };
		note sprintf('%s: %d of the exact 10 nearest', $name, scalar(grep { $exact{ $_->[0] } } @$rows));
	}

	my $name = "query $n, 0.1% selectivity, LIMIT 30";
	my $rows = filtered($q, $RARE, 30, $name);
	compare_id_sets([ map { $_->[0] } @$rows ], [ keys %rare_ids ],
		"$name: returns exactly the 20 rows of the category");
}

############################################################################
# A LATERAL join: a nested loop rescanning the index for each probe.
############################################################################

# 400 probes: rows of the table (their own vector, their own category), half
# of them limited to 5 rows, and every 20th asking the rare category for 30
# rows (more than it has).
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE probe AS
	SELECT row_number() OVER (ORDER BY id) AS pid, id AS self, v,
	       CASE WHEN id % 20 = 0 THEN $RARE ELSE category END AS cat,
	       CASE WHEN id % 20 = 0 THEN 30 WHEN id % 2 = 0 THEN 5 ELSE 10 END AS lim
	  FROM t WHERE id % 50 < 20 AND category <> $RARE ORDER BY id LIMIT 400;
	ANALYZE probe;
});
my %probe;
for my $line (split /\n/, $node->safe_psql('postgres', 'SELECT pid, self, cat, lim FROM probe'))
{
	my ($pid, $self, $cat, $lim) = split /\|/, $line;
	$probe{$pid} = { self => $self, cat => $cat, lim => $lim };
}
is(scalar(keys %probe), 400, 'LATERAL: 400 probes');

# Parses "pid|id|category|distance" lines into { pid => [[id, category,
# distance], ...] }.
sub by_probe
{
	my ($out) = @_;
	my %res = map { $_ => [] } keys %probe;
	for my $line (split /\n/, $out)
	{
		my ($pid, $id, $category, $d) = split /\|/, $line;
		push @{ $res{$pid} }, [ $id, $category, $d ];
	}
	return \%res;
}

my $lateral = q{
	SELECT p.pid, s.id, s.category, s.d
	  FROM probe p CROSS JOIN LATERAL
	       (SELECT id, category, v <-> p.v AS d FROM t WHERE category = p.cat
	         ORDER BY v <-> p.v LIMIT p.lim) s
	 ORDER BY p.pid};
my $plan = $node->safe_psql('postgres', "$FORCE EXPLAIN (COSTS OFF) $lateral");
like($plan, qr/Nested Loop.*Limit.*Index Scan using t_v on t/s,
	'LATERAL: a nested loop over index scans')
  or diag($plan);

$t0 = now_s();
my $got = by_probe($node->safe_psql('postgres', "$FORCE $lateral"));
note 'LATERAL: 400 rescans in ' . elapsed_since($t0) . ' s';

# The same scans, each one a fresh scan of its own statement: a rescan must
# start over exactly as a new scan does.
my $alone = '';
for my $pid (sort { $a <=> $b } keys %probe)
{
	my $p = $probe{$pid};
	my $q = "(SELECT v FROM probe WHERE pid = $pid)";
	$alone .= "SELECT $pid, id, category, v <-> $q FROM t "
	  . "WHERE category = $p->{cat} ORDER BY v <-> $q LIMIT $p->{lim};\n";
}
my $first_alone = (split /\n/, $alone)[0];
like($node->safe_psql('postgres', "$FORCE EXPLAIN (COSTS OFF) $first_alone"),
	qr/Index Scan using t_v on t/, 'LATERAL: the fresh scans are index scans');
$t0 = now_s();
my $fresh = by_probe($node->safe_psql('postgres', "$FORCE $alone"));
note 'LATERAL: 400 fresh scans in ' . elapsed_since($t0) . ' s';

# The exact answers, from a hash join ranked by a window function.
$t0 = now_s();
my $exact = by_probe(
	$node->safe_psql(
		'postgres', q{
	SET enable_indexscan = off;
	SELECT pid, id, category, d FROM (
		SELECT p.pid, t.id, t.category, t.v <-> p.v AS d, p.lim,
		       row_number() OVER (PARTITION BY p.pid ORDER BY t.v <-> p.v) AS rn
		  FROM probe p JOIN t ON t.category = p.cat) s
	 WHERE rn <= lim ORDER BY pid, rn}));
note 'LATERAL: exact answers in ' . elapsed_since($t0) . ' s';

my ($wrong_count, $wrong_filter, $dups, $differ, $no_self, $rare_incomplete) = (0, 0, 0, 0, 0, 0);
my ($hits, $wanted) = (0, 0);
for my $pid (sort { $a <=> $b } keys %probe)
{
	my $p = $probe{$pid};
	my @rows = @{ $got->{$pid} };
	my $want = $p->{cat} == $RARE ? 20 : $p->{lim};
	$want = $p->{lim} if $want > $p->{lim};
	if (@rows != $want)
	{
		$wrong_count++;
		diag("probe $pid: " . scalar(@rows) . " rows, expected $want") if $wrong_count <= 5;
	}
	$wrong_filter += grep { $_->[1] != $p->{cat} } @rows;
	my %seen;
	$dups += grep { $seen{ $_->[0] }++ } @rows;
	my $a_rows = join(',', map { "$_->[0]:$_->[2]" } @rows);
	my $f_rows = join(',', map { "$_->[0]:$_->[2]" } @{ $fresh->{$pid} });
	if ($a_rows ne $f_rows)
	{
		$differ++;
		diag("probe $pid: rescan gave $a_rows, a fresh scan $f_rows") if $differ <= 5;
	}
	if ($p->{cat} == $RARE)
	{
		$rare_incomplete++ if grep({ !$rare_ids{$_} } keys %seen) || keys(%seen) != 20;
	}
	else
	{
		$no_self++ unless $seen{ $p->{self} };
	}
	my $ex = $exact->{$pid};
	my $kth = $ex->[-1][2];
	$hits += grep { $_->[2] <= $kth } @rows;
	$wanted += @$ex;
}
is($wrong_count, 0, 'LATERAL: every probe gets min(LIMIT, matching rows) rows');
is($wrong_filter, 0, 'LATERAL: every row matches its probe\'s category');
is($dups, 0, 'LATERAL: no probe gets a row twice');
is($differ, 0, 'LATERAL: each rescan returns what a fresh scan of the same query returns');
is($rare_incomplete, 0, 'LATERAL: probes of the rare category with LIMIT 30 get all 20 of its rows');
my $recall = $hits / $wanted;
diag(sprintf('LATERAL at ef_search 10: recall %.4f against the exact answers; '
	  . '%d of %d probes filtered by their own category miss their own row',
	  $recall, $no_self, scalar(grep { $_->{cat} != $RARE } values %probe)));
cmp_ok($recall, '>=', 0.9, 'LATERAL: recall against the exact answers >= 0.9');

$node->stop;
done_testing();
