# Smoke test: a server that preloads hannoy can install the extension, and
# the extension's L2 distance operator on real[] answers. Proves that the TAP
# layer of scripts/test.sh works before the topic tests run.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'hannoy'");
$node->start;

my ($ret, $stdout, $stderr) =
  $node->psql('postgres', 'CREATE EXTENSION hannoy');
is($ret, 0, 'CREATE EXTENSION hannoy succeeds') or diag($stderr);

my $extensions =
  $node->safe_psql('postgres', 'SELECT extname FROM pg_extension');
like($extensions, qr/^hannoy$/m, 'pg_extension lists hannoy');

is( $node->safe_psql('postgres', q{SELECT '{1,2}'::real[] <-> '{4,6}'::real[]}),
	'5', 'L2 distance between {1,2} and {4,6} is 5');

$node->stop;
done_testing();
