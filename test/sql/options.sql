-- options: validation of the index reloptions (m, ef_construction) and of
-- the GUCs hannoy.ef_search and hannoy.build_threads.
--
-- Every out-of-range value is rejected with an error that names the option
-- and its valid range; valid values at both ends of each range are
-- accepted, and an index built with them answers queries.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

CREATE TABLE options_test (id int PRIMARY KEY, v real[]);
INSERT INTO options_test
  SELECT i, ARRAY[i % 10, i / 10]::real[] FROM generate_series(0, 99) i;

--
-- m: links per node, 2 to 100 (default 16)
--
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 1);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 0);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = -5);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 101);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 'abc');

--
-- ef_construction: candidate list size during build, 4 to 1000, at least
-- 2 * m (default max(64, 2 * m))
--
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 3);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 0);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 1001);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 'abc');
-- below 2 * m: with m given, and with the default m = 16 (2 * m = 32)
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 10, ef_construction = 19);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 31);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (m = 100, ef_construction = 199);
-- the order in which the options are written does not matter
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_construction = 19, m = 10);

--
-- unknown options
--
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (ef_search = 40);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (lists = 100);
CREATE INDEX options_bad ON options_test USING hannoy (v) WITH (fillfactor = 90);

-- none of the failed statements left an index behind (the one index is
-- the primary key)
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'options_test'::regclass;

--
-- Valid options, at both ends of each range; each index answers an exact
-- query (with hannoy.ef_search at least the row count): the nearest row to
-- (4.2, 5.3) is row 54 at (4, 5)
--
SET hannoy.ef_search = 100;
SET enable_seqscan = off;
CREATE INDEX options_min ON options_test USING hannoy (v) WITH (m = 2, ef_construction = 4);
SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 1;
DROP INDEX options_min;
CREATE INDEX options_max ON options_test USING hannoy (v) WITH (m = 100, ef_construction = 1000);
SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 1;
DROP INDEX options_max;
-- ef_construction exactly 2 * m
CREATE INDEX options_twice ON options_test USING hannoy (v) WITH (m = 10, ef_construction = 20);
SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 1;
DROP INDEX options_twice;
-- m alone: ef_construction defaults to max(64, 2 * m), so m = 50 needs no
-- ef_construction of its own
CREATE INDEX options_m ON options_test USING hannoy (v) WITH (m = 50);
SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 1;
SELECT relname, reloptions FROM pg_class WHERE relname = 'options_m';
DROP INDEX options_m;
RESET enable_seqscan;
RESET hannoy.ef_search;

--
-- ALTER INDEX ... SET checks the same rules (the new values apply to the
-- next build)
--
CREATE INDEX options_alter ON options_test USING hannoy (v) WITH (m = 8, ef_construction = 16);
ALTER INDEX options_alter SET (m = 101);
ALTER INDEX options_alter SET (ef_construction = 2000);
ALTER INDEX options_alter SET (m = 9);
ALTER INDEX options_alter SET (bogus = 1);
SELECT relname, reloptions FROM pg_class WHERE relname = 'options_alter';
ALTER INDEX options_alter SET (m = 4, ef_construction = 100);
SELECT relname, reloptions FROM pg_class WHERE relname = 'options_alter';
ALTER INDEX options_alter RESET (m, ef_construction);
SELECT relname, reloptions FROM pg_class WHERE relname = 'options_alter';
REINDEX INDEX options_alter;
SET enable_seqscan = off;
SET hannoy.ef_search = 100;
SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 1;
RESET hannoy.ef_search;
RESET enable_seqscan;
DROP INDEX options_alter;

--
-- hannoy.ef_search: 1 to 1000, default 40
--
SHOW hannoy.ef_search;
SET hannoy.ef_search = 0;
SET hannoy.ef_search = -1;
SET hannoy.ef_search = 1001;
SET hannoy.ef_search = 'abc';
-- the failed SETs left the default in place
SHOW hannoy.ef_search;
SET hannoy.ef_search = 1;
SHOW hannoy.ef_search;
SET hannoy.ef_search = 1000;
SHOW hannoy.ef_search;
RESET hannoy.ef_search;
SHOW hannoy.ef_search;
-- SET LOCAL lasts until the end of the transaction
BEGIN;
SET LOCAL hannoy.ef_search = 77;
SHOW hannoy.ef_search;
COMMIT;
SHOW hannoy.ef_search;

--
-- hannoy.build_threads: 1 to 64; the default is the number of cores (at
-- most 64), so only its range is shown
--
SELECT current_setting('hannoy.build_threads')::int BETWEEN 1 AND 64 AS default_in_range;
SET hannoy.build_threads = 0;
SET hannoy.build_threads = 65;
SET hannoy.build_threads = 'many';
SET hannoy.build_threads = 1;
SHOW hannoy.build_threads;
SET hannoy.build_threads = 64;
SHOW hannoy.build_threads;
-- an index built with one thread and with several answers the same exact
-- query: the five rows nearest to (4.2, 5.3) are 54 (4, 5), 64 (4, 6),
-- 55 (5, 5), 65 (5, 6) and 53 (3, 5); the next, 44 (4, 4), is farther
SET hannoy.ef_search = 100;
SET enable_seqscan = off;
SET hannoy.build_threads = 1;
CREATE INDEX options_threads ON options_test USING hannoy (v);
SELECT array_agg(id) AS nearest_five
  FROM (SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 5) s;
DROP INDEX options_threads;
SET hannoy.build_threads = 4;
CREATE INDEX options_threads ON options_test USING hannoy (v);
SELECT array_agg(id) AS nearest_five
  FROM (SELECT id FROM options_test ORDER BY v <-> '{4.2,5.3}' LIMIT 5) s;
DROP INDEX options_threads;
RESET enable_seqscan;
RESET hannoy.ef_search;
RESET hannoy.build_threads;

--
-- Both GUCs as pg_settings lists them: anyone may set them, and each
-- description gives the range
--
SELECT name, setting, unit, context, vartype, min_val, max_val, short_desc
  FROM pg_settings WHERE name = 'hannoy.ef_search';
SELECT name, context, vartype, min_val, max_val, short_desc
  FROM pg_settings WHERE name = 'hannoy.build_threads';
-- the hannoy. prefix is reserved: a misspelt GUC is an error, not a new
-- placeholder variable
SET hannoy.efsearch = 10;
SET hannoy.ef_construction = 10;

DROP TABLE options_test;
