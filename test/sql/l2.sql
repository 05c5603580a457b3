-- l2: the real_l2_ops operator class, euclidean distance on real[] (<->).
--
-- Checks the operator and its function on values a reader can compute by
-- hand, then an index on 300 rows laid out on a grid: its top 10 with a
-- wide search equals a sequential scan's, an unbounded scan returns every
-- row (NULL vectors last), rows inserted after the build are found, and an
-- index built on an empty table works once rows arrive.
--
-- The graph is randomised per build, so nothing below shows an order the
-- index does not guarantee: hannoy.ef_search is at least the row count
-- wherever exact results are shown, and rows with equal distances are
-- listed by id.  Distances are computed in single precision, so their
-- sixth decimal may differ by one from a hand computation.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

--
-- The operator and its function
--
-- 3-4-5 triangle: sqrt(3^2 + 4^2) = 5
SELECT '{1,2}'::real[] <-> '{4,6}'::real[] AS five;
SELECT hannoy_l2_distance('{1,2}', '{4,6}') AS five;
-- sqrt(1 + 4 + 4) = 3; identical vectors are 0 apart; the order of the
-- arguments does not matter; negative coordinates: sqrt(6^2 + 8^2) = 10
SELECT '{0,0,0}'::real[] <-> '{1,2,2}'::real[] AS three,
       '{1.5,-2}'::real[] <-> '{1.5,-2}'::real[] AS zero,
       '{4,6}'::real[] <-> '{1,2}'::real[] AS five,
       '{-3,-4}'::real[] <-> '{3,4}'::real[] AS ten;
-- the function is STRICT: a NULL argument gives NULL
SELECT ('{1,2}'::real[] <-> NULL) IS NULL AS is_null,
       hannoy_l2_distance(NULL, '{1,2}') IS NULL AS is_null;
-- the operator is its own commutator and the class's ordering operator
SELECT oprname, oprcom::regoper AS commutator, oprcode
  FROM pg_operator WHERE oid = '<->(real[], real[])'::regoperator;
-- hannoy_simd() names the distance kernels this server uses, which
-- depends on the CPU: only that it is one of the known ones is shown
SELECT hannoy_simd() IN ('scalar', 'popcnt', 'avx2', 'avx512') AS known_kernel;
SELECT opcname, opcdefault FROM pg_opclass
  WHERE opcname = 'real_l2_ops' AND opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hannoy');

--
-- 300 rows: row i sits at (i % 20, i / 20) on a 20 x 15 grid, except that
-- every 50th row (0, 50, ..., 250) has a NULL vector.
--
CREATE TABLE l2_test (id int PRIMARY KEY, v real[]);
INSERT INTO l2_test
  SELECT i, CASE WHEN i % 50 = 0 THEN NULL ELSE ARRAY[i % 20, i / 20]::real[] END
  FROM generate_series(0, 299) i;
CREATE INDEX l2_test_v ON l2_test USING hannoy (v);

-- a wide search makes the index exact on 300 rows
SET hannoy.ef_search = 300;
SET enable_seqscan = off;

-- the index answers the top-10 query
EXPLAIN (COSTS OFF)
SELECT id FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 10;

-- The ten rows nearest to (3.31, 7.17), as the index returns them, with the
-- squared distance computed by hand from the grid position next to each:
-- row 143 is (3, 7): 0.31^2 + 0.17^2 = 0.125, distance 0.353553; row 144 is
-- (4, 7): 0.69^2 + 0.17^2 = 0.505; and so on.  No two of the 11 nearest
-- rows are equally far, so the top 10 is unique.
SELECT row_number() OVER () AS rank, id, v, round(dist::numeric, 6) AS dist,
       round(((v[1] - 3.31) ^ 2 + (v[2] - 7.17) ^ 2)::numeric, 3) AS dist_squared_by_hand
  FROM (SELECT id, v, v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 10) s;

-- the same query answered by a sequential scan and a sort gives the same
-- ids in the same order with bit-for-bit the same distances
CREATE TEMP TABLE l2_by_index AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 10) s;
RESET enable_seqscan;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM l2_test ORDER BY v <-> '{3.31,7.17}', id LIMIT 10;
CREATE TEMP TABLE l2_by_seqscan AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}', id LIMIT 10) s;
RESET enable_indexscan;
SELECT i.ids = s.ids AS same_ids, i.dists = s.dists AS same_distances, i.ids
  FROM l2_by_index i, l2_by_seqscan s;

-- The whole table in index order with a wide search: distances never
-- decrease (the order the index reports agrees exactly with the operator),
-- the distances are exactly those of a sorted sequential scan, every row
-- comes once, and the 6 NULL rows come last.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM l2_test ORDER BY v <-> '{3.31,7.17}';
CREATE TEMP TABLE l2_full AS
  SELECT row_number() OVER () AS pos, id, dist
  FROM (SELECT id, v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}') s;
RESET enable_seqscan;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance
  FROM l2_full;
SELECT count(*) AS out_of_order
  FROM l2_full a JOIN l2_full b ON b.pos = a.pos + 1
  WHERE b.dist < a.dist;
SELECT array_agg(dist ORDER BY pos) IS NOT DISTINCT FROM
       (SELECT array_agg(v <-> '{3.31,7.17}' ORDER BY v <-> '{3.31,7.17}') FROM l2_test)
       AS same_distances_as_seqscan
  FROM l2_full;
-- positions 295 to 300 are the NULL rows, in no particular order among themselves
SELECT min(pos) AS first_pos, max(pos) AS last_pos, bool_and(dist IS NULL) AS all_null,
       array_agg(id ORDER BY id) AS ids
  FROM l2_full WHERE pos > 294;

-- With the default, narrow search (hannoy.ef_search = 40) an unbounded scan
-- still returns all 300 rows: it never stops early, and the NULL rows still
-- come last.
RESET hannoy.ef_search;
SHOW hannoy.ef_search;
SET enable_seqscan = off;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids
  FROM (SELECT id FROM l2_test ORDER BY v <-> '{3.31,7.17}') s;
SELECT bool_and(dist IS NULL) AS last_six_null, count(*)
  FROM (SELECT v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}' OFFSET 294) s;
SELECT count(dist) AS first_294_have_distances
  FROM (SELECT v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 294) s;
RESET enable_seqscan;

--
-- Rows inserted after the build are found.
--
SET hannoy.ef_search = 400;
SET enable_seqscan = off;
-- row 1000 sits exactly on the query point, row 1001 has no vector
INSERT INTO l2_test VALUES (1000, '{3.31,7.17}'), (1001, NULL);
SELECT id, round(dist::numeric, 6) AS dist
  FROM (SELECT id, v <-> '{3.31,7.17}' AS dist
          FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 3) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> '{3.31,7.17}' AS dist FROM l2_test ORDER BY v <-> '{3.31,7.17}') s;
-- a row inserted in the current transaction is found by the same
-- transaction's scans, and is gone after ROLLBACK
BEGIN;
INSERT INTO l2_test VALUES (1002, '{3.3,7.2}');
SELECT id FROM l2_test ORDER BY v <-> '{3.3,7.2}' LIMIT 1;
ROLLBACK;
SELECT id FROM l2_test ORDER BY v <-> '{3.3,7.2}' LIMIT 1;
SELECT count(*) AS rows FROM (SELECT id FROM l2_test ORDER BY v <-> '{3.3,7.2}') s;
-- rows deleted are no longer returned
DELETE FROM l2_test WHERE id IN (143, 1000);
SELECT id FROM l2_test ORDER BY v <-> '{3.31,7.17}' LIMIT 2;
RESET enable_seqscan;
RESET hannoy.ef_search;

--
-- An index built on an empty table works once it is filled: 100 rows on a
-- 10 x 10 grid, row i at (i % 10, i / 10), plus one NULL row.
--
CREATE TABLE l2_empty (id int PRIMARY KEY, v real[]);
CREATE INDEX l2_empty_v ON l2_empty USING hannoy (v);
SET enable_seqscan = off;
-- nothing to find yet
SELECT count(*) FROM (SELECT id FROM l2_empty ORDER BY v <-> '{1,1}') s;
INSERT INTO l2_empty SELECT i, ARRAY[i % 10, i / 10]::real[] FROM generate_series(0, 99) i;
INSERT INTO l2_empty VALUES (100, NULL);
SET hannoy.ef_search = 100;
EXPLAIN (COSTS OFF)
SELECT id FROM l2_empty ORDER BY v <-> '{2.2,6.7}' LIMIT 5;
-- nearest to (2.2, 6.7), squared distances by hand: row 72 at (2, 7):
-- 0.04 + 0.09 = 0.13; row 62 (2, 6): 0.04 + 0.49 = 0.53; row 73 (3, 7):
-- 0.64 + 0.09 = 0.73; row 63 (3, 6): 0.64 + 0.49 = 1.13; row 71 (1, 7):
-- 1.44 + 0.09 = 1.53; the next, row 82 (2, 8), is at 0.04 + 1.69 = 1.73
SELECT id, v, round(dist::numeric, 6) AS dist,
       round(((v[1] - 2.2) ^ 2 + (v[2] - 6.7) ^ 2)::numeric, 3) AS dist_squared_by_hand
  FROM (SELECT id, v, v <-> '{2.2,6.7}' AS dist
          FROM l2_empty ORDER BY v <-> '{2.2,6.7}' LIMIT 5) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> '{2.2,6.7}' AS dist FROM l2_empty ORDER BY v <-> '{2.2,6.7}') s;
RESET enable_seqscan;
RESET hannoy.ef_search;

DROP TABLE l2_test, l2_empty;
