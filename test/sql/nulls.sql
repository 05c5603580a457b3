-- nulls: rows without an indexable vector, and filtered queries.
--
-- A NULL vector, and under cosine a zero vector (no direction), get no
-- graph node, but an index scan still returns them after all other rows:
-- zero vectors (distance NaN, which sorts after every number) and then
-- NULL vectors (distance NULL, which sorts last), exactly where a sorted
-- sequential scan puts them.  A NULL query makes every distance NULL and
-- returns every row.  And because a scan never stops early, a filtered
-- top-k query returns all k rows when k rows match, even with the
-- narrowest search (hannoy.ef_search = 1).
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;
-- plans with sequential scans disabled cost enough to trigger JIT
SET jit = off;

--
-- 100 rows: row i points at the angle 0.1 * i radians, except that rows
-- 10, 20, ..., 100 have a NULL vector and rows 5, 15, ..., 95 the zero
-- vector (0, 0): 80 vectors, 10 zero vectors, 10 NULLs
--
CREATE TABLE nulls_test (id int PRIMARY KEY, v real[]);
INSERT INTO nulls_test
  SELECT i, CASE WHEN i % 10 = 0 THEN NULL
                 WHEN i % 10 = 5 THEN '{0,0}'::real[]
                 ELSE ARRAY[cos(0.1 * i), sin(0.1 * i)]::real[] END
  FROM generate_series(1, 100) i;
CREATE INDEX nulls_test_cos ON nulls_test USING hannoy (v real_cosine_ops);

-- Even with the narrowest search, an unbounded scan returns all 100 rows:
-- the 80 vectors first, then the 10 zero vectors (NaN), then the 10 NULLs
SET hannoy.ef_search = 1;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_test ORDER BY v <=> '{1,0}';
CREATE TEMP TABLE nulls_cos_scan AS
  SELECT row_number() OVER () AS pos, id, dist
  FROM (SELECT id, v <=> '{1,0}' AS dist FROM nulls_test ORDER BY v <=> '{1,0}') s;
SELECT CASE WHEN dist IS NULL THEN 'NULL vector'
            WHEN dist = 'NaN' THEN 'zero vector'
            ELSE 'vector' END AS kind,
       count(*), min(pos) AS first_pos, max(pos) AS last_pos, array_agg(id ORDER BY id) AS ids
  FROM nulls_cos_scan GROUP BY 1 ORDER BY min(pos);
SELECT count(DISTINCT id) AS distinct_ids FROM nulls_cos_scan;
-- with a LIMIT that reaches into them, the zero vectors follow the vectors
SELECT count(*) FILTER (WHERE dist = 'NaN') AS nan, count(*) FILTER (WHERE dist IS NULL) AS null
  FROM (SELECT v <=> '{1,0}' AS dist FROM nulls_test ORDER BY v <=> '{1,0}' LIMIT 85) s;
SELECT count(*) FILTER (WHERE dist = 'NaN') AS nan, count(*) FILTER (WHERE dist IS NULL) AS null
  FROM (SELECT v <=> '{1,0}' AS dist FROM nulls_test ORDER BY v <=> '{1,0}' LIMIT 95) s;

-- A zero query vector has no direction: every distance is NaN (NULL for
-- the NULL rows), and every row comes back, the NULL rows last
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_test ORDER BY v <=> '{0,0}';
SELECT count(*) AS rows, count(*) FILTER (WHERE dist = 'NaN') AS nan,
       count(*) FILTER (WHERE dist IS NULL) AS null
  FROM (SELECT v <=> '{0,0}' AS dist FROM nulls_test ORDER BY v <=> '{0,0}') s;
-- NaN sorts before NULL, so the 10 NULL rows are the last 10, and a LIMIT
-- of 95 returns the 90 NaN rows and 5 NULL rows, as a sorted sequential
-- scan does
SELECT bool_and(dist IS NULL) AS last_ten_null
  FROM (SELECT v <=> '{0,0}' AS dist FROM nulls_test ORDER BY v <=> '{0,0}' OFFSET 90) s;
SELECT count(*) FILTER (WHERE dist = 'NaN') AS nan, count(*) FILTER (WHERE dist IS NULL) AS null
  FROM (SELECT v <=> '{0,0}' AS dist FROM nulls_test ORDER BY v <=> '{0,0}' LIMIT 95) s;

-- ORDER BY v <=> NULL: the planner folds the distance to a NULL constant
-- and drops the ORDER BY, so no index is involved and all rows come back
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_test ORDER BY v <=> NULL;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <=> NULL AS dist FROM nulls_test ORDER BY v <=> NULL) s;
-- a NULL query that reaches the index (here as a subquery's result): every
-- row comes back, each with a NULL distance
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_test ORDER BY v <=> (SELECT NULL::real[]);
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance
  FROM (SELECT id, v <=> (SELECT NULL::real[]) AS dist
          FROM nulls_test ORDER BY v <=> (SELECT NULL::real[])) s;
SELECT count(*) AS rows
  FROM (SELECT id FROM nulls_test ORDER BY v <=> (SELECT NULL::real[]) LIMIT 7) s;
RESET enable_seqscan;

-- Under l2 the zero vector is an ordinary vector (distance |q| = 1 from
-- (1, 0)); only the 10 NULL rows come last
DROP INDEX nulls_test_cos;
CREATE INDEX nulls_test_l2 ON nulls_test USING hannoy (v);
SET enable_seqscan = off;
SELECT count(*) AS rows, count(dist) AS with_distance,
       count(*) FILTER (WHERE dist = 1) AS at_distance_one
  FROM (SELECT v <-> '{1,0}' AS dist FROM nulls_test ORDER BY v <-> '{1,0}') s;
SELECT bool_and(dist IS NULL) AS last_ten_null, array_agg(id ORDER BY id) AS ids
  FROM (SELECT id, v <-> '{1,0}' AS dist FROM nulls_test ORDER BY v <-> '{1,0}' OFFSET 90) s;
-- with a NULL query, every row comes back
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> (SELECT NULL::real[]) AS dist
          FROM nulls_test ORDER BY v <-> (SELECT NULL::real[])) s;
RESET enable_seqscan;
RESET hannoy.ef_search;
DROP TABLE nulls_test;

--
-- A table of only NULL vectors: the index has no graph at all and no
-- dimension count yet, so any query vector will do, and every row comes
-- back
--
CREATE TABLE nulls_only (id int PRIMARY KEY, v real[]);
INSERT INTO nulls_only SELECT i, NULL FROM generate_series(1, 5) i;
CREATE INDEX nulls_only_v ON nulls_only USING hannoy (v);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_only ORDER BY v <-> '{1,2}' LIMIT 3;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> '{1,2}' AS dist FROM nulls_only ORDER BY v <-> '{1,2}') s;
SELECT count(*) AS rows
  FROM (SELECT id FROM nulls_only ORDER BY v <-> '{1,2,3}' LIMIT 3) s;
SELECT array_agg(id ORDER BY id) AS ids
  FROM (SELECT id FROM nulls_only ORDER BY v <-> (SELECT NULL::real[])) s;
-- more NULL rows, then a first vector: it fixes the dimension count and
-- comes first, the 6 NULL rows after it
INSERT INTO nulls_only VALUES (6, NULL);
INSERT INTO nulls_only VALUES (7, '{1,2}');
SELECT id, dist
  FROM (SELECT id, v <-> '{1,2}' AS dist FROM nulls_only ORDER BY v <-> '{1,2}' LIMIT 1) s;
SELECT bool_and(dist IS NULL) AS last_six_null, count(*)
  FROM (SELECT v <-> '{1,2}' AS dist FROM nulls_only ORDER BY v <-> '{1,2}' OFFSET 1) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> '{1,2}' AS dist FROM nulls_only ORDER BY v <-> '{1,2}') s;
SELECT id FROM nulls_only ORDER BY v <-> '{1,2,3}' LIMIT 1;
RESET enable_seqscan;
DROP TABLE nulls_only;

-- the same under cosine with only zero vectors and NULLs
CREATE TABLE nulls_zero (id int PRIMARY KEY, v real[]);
INSERT INTO nulls_zero VALUES (1, '{0,0}'), (2, NULL), (3, '{0,0}');
CREATE INDEX nulls_zero_v ON nulls_zero USING hannoy (v real_cosine_ops);
SET enable_seqscan = off;
SELECT array_agg(id ORDER BY id) FILTER (WHERE dist = 'NaN') AS nan,
       array_agg(id ORDER BY id) FILTER (WHERE dist IS NULL) AS null
  FROM (SELECT id, v <=> '{1,1}' AS dist FROM nulls_zero ORDER BY v <=> '{1,1}') s;
SELECT id, dist IS NULL AS is_null
  FROM (SELECT id, v <=> '{1,1}' AS dist FROM nulls_zero ORDER BY v <=> '{1,1}' OFFSET 2) s;
RESET enable_seqscan;
DROP TABLE nulls_zero;

--
-- Filtered queries at low selectivity with hannoy.ef_search = 1: 2000 rows
-- in 100 categories (category = id % 100); category 7 has 20 rows, and the
-- 10 of them with id % 200 = 7 (7, 207, ..., 1807) have a NULL vector.
--
CREATE TABLE nulls_filter (id int PRIMARY KEY, category int, v real[]);
INSERT INTO nulls_filter
  SELECT i, i % 100,
         CASE WHEN i % 200 = 7 THEN NULL
              ELSE ARRAY[sin(i), cos(i), sin(0.37 * i)]::real[] END
  FROM generate_series(1, 2000) i;
CREATE INDEX nulls_filter_v ON nulls_filter USING hannoy (v);
ANALYZE nulls_filter;
SET hannoy.ef_search = 1;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM nulls_filter WHERE category = 7 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;
-- LIMIT 10: the 10 rows of category 7 that have a vector, and only those
-- (rows without a vector come after every row with one)
SELECT count(*) AS rows, count(dist) AS with_distance,
       array_agg(id ORDER BY id) AS ids
  FROM (SELECT id, v <-> '{0.1,0.2,0.3}' AS dist FROM nulls_filter WHERE category = 7
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10) s;
-- LIMIT 5: five rows, all of category 7, all with a vector
SELECT count(*) AS rows, bool_and(category = 7) AS all_category_7, count(dist) AS with_distance
  FROM (SELECT category, v <-> '{0.1,0.2,0.3}' AS dist FROM nulls_filter WHERE category = 7
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5) s;
-- LIMIT 15: the 10 with a vector, then 5 without
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <-> '{0.1,0.2,0.3}' AS dist FROM nulls_filter WHERE category = 7
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 15) s;
-- LIMIT 30: only 20 rows match, and all 20 come back
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance
  FROM (SELECT id, v <-> '{0.1,0.2,0.3}' AS dist FROM nulls_filter WHERE category = 7
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 30) s;
-- an even rarer filter: one matching row out of 2000
SELECT id FROM nulls_filter WHERE id = 1234 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;
SELECT count(*) AS rows
  FROM (SELECT id FROM nulls_filter WHERE category = 42 AND id > 1900
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10) s;
RESET enable_seqscan;
RESET hannoy.ef_search;
DROP TABLE nulls_filter;
