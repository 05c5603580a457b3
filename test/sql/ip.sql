-- ip: the real_ip_ops operator class, negative inner product on real[] (<#>).
--
-- Checks the operator and its function on values a reader can compute by
-- hand, then an index on 300 rows at known angles and lengths: its top 10
-- with a wide search equals a sequential scan's, an unbounded scan returns
-- every row (NULL vectors last), rows inserted after the build are found,
-- and an index built on an empty table works once rows arrive.
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
-- The operator and its function: minus the inner product, so that a
-- larger inner product sorts first
--
-- -(1*4 + 2*5 + 3*6) = -32
SELECT '{1,2,3}'::real[] <#> '{4,5,6}'::real[] AS minus_32;
SELECT hannoy_negative_inner_product('{1,2,3}', '{4,5,6}') AS minus_32;
-- opposite directions: -(1*(-2)) = 2; the order of the arguments does not
-- matter; orthogonal vectors and a zero vector give 0 (never -0): unlike
-- cosine, a zero vector is an ordinary vector here
SELECT '{1,0}'::real[] <#> '{-2,0}'::real[] AS two,
       '{4,5,6}'::real[] <#> '{1,2,3}'::real[] AS minus_32,
       '{1,-1}'::real[] <#> '{1,1}'::real[] AS zero,
       ('{1,-1}'::real[] <#> '{1,1}'::real[]) = 0 AS equals_zero,
       '{0,0}'::real[] <#> '{1,1}'::real[] AS zero;
-- the function is STRICT: a NULL argument gives NULL
SELECT ('{1,2}'::real[] <#> NULL) IS NULL AS is_null,
       hannoy_negative_inner_product(NULL, '{1,2}') IS NULL AS is_null;
-- the operator is its own commutator; the class is not the default for real[]
SELECT oprname, oprcom::regoper AS commutator, oprcode
  FROM pg_operator WHERE oid = '<#>(real[], real[])'::regoperator;
SELECT opcname, opcdefault FROM pg_opclass
  WHERE opcname = 'real_ip_ops' AND opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hannoy');

--
-- 300 rows: row i points at the angle 0.1 * i radians with length
-- 1 + i % 3, so its inner product with (1, 0) is (1 + i % 3) * cos(0.1 * i).
-- Every 50th row (0, 50, ..., 250) has a NULL vector.
--
CREATE TABLE ip_test (id int PRIMARY KEY, v real[]);
INSERT INTO ip_test
  SELECT i, CASE WHEN i % 50 = 0 THEN NULL
                 ELSE ARRAY[(1 + i % 3) * cos(0.1 * i), (1 + i % 3) * sin(0.1 * i)]::real[] END
  FROM generate_series(0, 299) i;
CREATE INDEX ip_test_v ON ip_test USING hannoy (v real_ip_ops);

-- a wide search makes the index exact on 300 rows
SET hannoy.ef_search = 300;
SET enable_seqscan = off;

-- the index answers the top-10 query
EXPLAIN (COSTS OFF)
SELECT id FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 10;

-- The ten rows with the largest inner product with (1, 0), as the index
-- returns them, next to -(1 + id % 3) * cos(0.1 * id) computed in double
-- precision: the first ones have length 3 (id % 3 = 2) and point close to
-- angle 0, like row 251 (25.1 rad, 0.033 rad short of four turns).  No two
-- of the 11 nearest rows are equally far, so the top 10 is unique.
SELECT row_number() OVER () AS rank, id, id % 3 + 1 AS length, round(dist::numeric, 6) AS dist,
       round((-(1 + id % 3) * cos(0.1 * id))::numeric, 6) AS dist_by_hand
  FROM (SELECT id, v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 10) s;

-- the same query answered by a sequential scan and a sort gives the same
-- ids in the same order with bit-for-bit the same distances
CREATE TEMP TABLE ip_by_index AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 10) s;
RESET enable_seqscan;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM ip_test ORDER BY v <#> '{1,0}', id LIMIT 10;
CREATE TEMP TABLE ip_by_seqscan AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}', id LIMIT 10) s;
RESET enable_indexscan;
SELECT i.ids = s.ids AS same_ids, i.dists = s.dists AS same_distances, i.ids
  FROM ip_by_index i, ip_by_seqscan s;

-- The whole table in index order with a wide search: distances never
-- decrease (the order the index reports agrees exactly with the operator),
-- the distances are exactly those of a sorted sequential scan, every row
-- comes once, and the 6 NULL rows come last.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM ip_test ORDER BY v <#> '{1,0}';
CREATE TEMP TABLE ip_full AS
  SELECT row_number() OVER () AS pos, id, dist
  FROM (SELECT id, v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}') s;
RESET enable_seqscan;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance
  FROM ip_full;
SELECT count(*) AS out_of_order
  FROM ip_full a JOIN ip_full b ON b.pos = a.pos + 1
  WHERE b.dist < a.dist;
SELECT array_agg(dist ORDER BY pos) IS NOT DISTINCT FROM
       (SELECT array_agg(v <#> '{1,0}' ORDER BY v <#> '{1,0}') FROM ip_test)
       AS same_distances_as_seqscan
  FROM ip_full;
-- positions 295 to 300 are the NULL rows, in no particular order among themselves
SELECT min(pos) AS first_pos, max(pos) AS last_pos, bool_and(dist IS NULL) AS all_null,
       array_agg(id ORDER BY id) AS ids
  FROM ip_full WHERE pos > 294;

-- With the default, narrow search (hannoy.ef_search = 40) an unbounded scan
-- still returns all 300 rows: it never stops early, and the NULL rows still
-- come last.
RESET hannoy.ef_search;
SHOW hannoy.ef_search;
SET enable_seqscan = off;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids
  FROM (SELECT id FROM ip_test ORDER BY v <#> '{1,0}') s;
SELECT bool_and(dist IS NULL) AS last_six_null, count(*)
  FROM (SELECT v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}' OFFSET 294) s;
SELECT count(dist) AS first_294_have_distances
  FROM (SELECT v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 294) s;
RESET enable_seqscan;

--
-- Rows inserted after the build are found.
--
SET hannoy.ef_search = 400;
SET enable_seqscan = off;
-- row 1000 is (5, 0), longer than any row along the query: inner product
-- 5; row 1001 is the zero vector, an ordinary row here (distance 0);
-- row 1002 has no vector
INSERT INTO ip_test VALUES (1000, '{5,0}'), (1001, '{0,0}'), (1002, NULL);
SELECT id, round(dist::numeric, 6) AS dist
  FROM (SELECT id, v <#> '{1,0}' AS dist
          FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 3) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <#> '{1,0}' AS dist FROM ip_test ORDER BY v <#> '{1,0}') s;
SELECT id, dist FROM (SELECT id, v <#> '{1,0}' AS dist FROM ip_test ORDER BY v <#> '{1,0}') s
  WHERE id = 1001;
-- a row inserted in the current transaction is found by the same
-- transaction's scans, and is gone after ROLLBACK
BEGIN;
INSERT INTO ip_test VALUES (1003, '{0,5}');
SELECT id FROM ip_test ORDER BY v <#> '{0,1}' LIMIT 1;
ROLLBACK;
SELECT id FROM ip_test ORDER BY v <#> '{0,1}' LIMIT 1;
SELECT count(*) AS rows FROM (SELECT id FROM ip_test ORDER BY v <#> '{0,1}') s;
-- rows deleted are no longer returned
DELETE FROM ip_test WHERE id IN (251, 1000);
SELECT id FROM ip_test ORDER BY v <#> '{1,0}' LIMIT 2;
RESET enable_seqscan;
RESET hannoy.ef_search;

--
-- An index built on an empty table works once it is filled: 100 rows at
-- the angle 0.1 * i radians with length 1 + i % 3, plus one NULL row.
--
CREATE TABLE ip_empty (id int PRIMARY KEY, v real[]);
CREATE INDEX ip_empty_v ON ip_empty USING hannoy (v real_ip_ops);
SET enable_seqscan = off;
-- nothing to find yet
SELECT count(*) FROM (SELECT id FROM ip_empty ORDER BY v <#> '{1,1}') s;
INSERT INTO ip_empty
  SELECT i, ARRAY[(1 + i % 3) * cos(0.1 * i), (1 + i % 3) * sin(0.1 * i)]::real[]
  FROM generate_series(0, 99) i;
INSERT INTO ip_empty VALUES (100, NULL);
SET hannoy.ef_search = 100;
EXPLAIN (COSTS OFF)
SELECT id FROM ip_empty ORDER BY v <#> '{0,1}' LIMIT 5;
-- largest inner product with (0, 1): rows of length 3 pointing near
-- pi/2 = 1.5708 rad: row 17 (1.7 rad), 80 (1.7168), 77 (1.4168), 14 (1.4),
-- then row 20 (length 3 at 2.0 rad); the next, row 83, is at -2.7065
SELECT id, id % 3 + 1 AS length, round(dist::numeric, 6) AS dist,
       round((-(1 + id % 3) * cos(0.1 * id - pi() / 2))::numeric, 6) AS dist_by_hand
  FROM (SELECT id, v <#> '{0,1}' AS dist
          FROM ip_empty ORDER BY v <#> '{0,1}' LIMIT 5) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <#> '{0,1}' AS dist FROM ip_empty ORDER BY v <#> '{0,1}') s;
RESET enable_seqscan;
RESET hannoy.ef_search;

DROP TABLE ip_test, ip_empty;
