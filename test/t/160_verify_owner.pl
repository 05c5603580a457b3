# hannoy_verify runs the index's expressions and predicate as the table's
# owner, never as the caller.
#
# An unprivileged role owns a table with a partial expression index whose
# key function and predicate function (both marked IMMUTABLE, both its own
# code) raise a NOTICE naming current_user and set a GUC.  When a superuser
# runs hannoy_verify, every notice must name the owner (as REINDEX would run
# them: the owner, in a security-restricted operation), the superuser's
# session must come back as itself with the GUC untouched, and the check
# must still find the index healthy.  The owner may verify its own index;
# another unprivileged role may not.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use HannoyTestUtil;

my $node = hannoy_node('verify_owner', conf => 'autovacuum = off');
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');

$node->safe_psql('postgres', q{
	CREATE ROLE owner_role LOGIN;
	CREATE ROLE other_role LOGIN;
	CREATE SCHEMA owned AUTHORIZATION owner_role;
	GRANT USAGE ON SCHEMA owned TO other_role;});

# Everything below is created by the unprivileged owner.
$node->safe_psql('postgres', q{
	SET ROLE owner_role;
	CREATE FUNCTION owned.key(v real[]) RETURNS real[] LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN
		RAISE NOTICE 'key runs as %', current_user;
		PERFORM set_config('hannoy_test.who', current_user, false);
		RETURN v;
	END $$;
	CREATE FUNCTION owned.keep(id int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN
		RAISE NOTICE 'keep runs as %', current_user;
		PERFORM set_config('hannoy_test.who', current_user, false);
		RETURN id % 2 = 0;
	END $$;
	CREATE TABLE owned.t (id int, v real[]);
	INSERT INTO owned.t SELECT i, ARRAY[i % 7, i % 5, i % 3, i]::real[] FROM generate_series(1, 40) i;
	CREATE INDEX t_v ON owned.t USING hannoy (owned.key(v)) WHERE owned.keep(id);});

# Runs hannoy_verify on the index as $role (a superuser when undefined),
# then reads current_user and the GUC the functions set, in one session.
# Returns psql's exit status, stdout and stderr.
sub verify_as
{
	my ($role) = @_;
	my $sql = '';
	$sql .= "SET ROLE $role;\n" if defined $role;
	$sql .= q{
		SELECT count(*) AS problems FROM hannoy_verify('owned.t_v');
		SELECT current_user, coalesce(current_setting('hannoy_test.who', true), '');};
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
	return ($ret, $out, $err);
}

# The names the notices of $stderr give, for the key and the predicate.
sub runners
{
	my ($err, $what) = @_;
	my %seen = map { $_ => 1 } ($err =~ /NOTICE:  \Q$what\E runs as (\S+)/g);
	return [ sort keys %seen ];
}

############################################################################
# A superuser verifies the owner's index.
############################################################################
my ($ret, $out, $err) = verify_as(undef);
is($ret, 0, 'a superuser runs hannoy_verify') or diag($err);
is_deeply(runners($err, 'key'), ['owner_role'],
	'the index expression runs as the table owner, never as the superuser')
  or diag($err);
is_deeply(runners($err, 'keep'), ['owner_role'],
	'the index predicate runs as the table owner, never as the superuser')
  or diag($err);
unlike($err, qr/runs as \Q$superuser\E\b/, 'no function of the index runs as the superuser');
is($out, "0\n$superuser|", 'the index is healthy, and the session is the superuser again with '
	. 'no setting the functions made');

############################################################################
# The owner verifies its own index; another role may not.
############################################################################
($ret, $out, $err) = verify_as('owner_role');
is($ret, 0, 'the owner runs hannoy_verify') or diag($err);
is_deeply(runners($err, 'key'), ['owner_role'], "the owner's own call runs the expression as itself");
is($out, "0\nowner_role|", 'the owner finds its index healthy');

($ret, $out, $err) = verify_as('other_role');
isnt($ret, 0, 'another role cannot verify the index');
like($err, qr/must be owner of index t_v/, 'it is told it must own the index');
is_deeply(runners($err, 'key'), [], 'no function of the index ran for it');

$node->stop;
done_testing();
