-- cosine: the real_cosine_ops operator class, cosine distance on real[] (<=>).
--
-- Checks the operator and its function on values a reader can compute by
-- hand (a zero vector has no direction: its distance is NaN), then an index
-- on 300 rows at known angles: its top 10 with a wide search equals a
-- sequential scan's, an unbounded scan returns every row (zero vectors,
-- whose distance is NaN, after all others, then NULL vectors last), rows
-- inserted after the build are found, and an index built on an empty table
-- works once rows arrive.
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
-- The operator and its function: 1 - cos(angle between the vectors)
--
-- orthogonal: 1 - 0 = 1
SELECT '{1,0}'::real[] <=> '{0,1}'::real[] AS one;
SELECT hannoy_cosine_distance('{1,0}', '{0,1}') AS one;
-- same direction, whatever the lengths: 0; opposite: 1 - (-1) = 2;
-- (3,4) and (4,3): 1 - 24/25 = 0.04; the order of the arguments does not matter
SELECT '{1,1}'::real[] <=> '{2,2}'::real[] AS zero,
       '{1,0}'::real[] <=> '{-1,0}'::real[] AS two,
       round(('{3,4}'::real[] <=> '{4,3}'::real[])::numeric, 6) AS four_hundredths,
       ('{3,4}'::real[] <=> '{4,3}'::real[]) = ('{4,3}'::real[] <=> '{3,4}'::real[]) AS symmetric;
-- a zero vector has no direction: the distance is NaN (not an error), on
-- either side and between two zero vectors
SELECT '{0,0}'::real[] <=> '{1,0}'::real[] AS nan,
       hannoy_cosine_distance('{1,0}', '{0,0}') AS nan,
       '{0,0}'::real[] <=> '{0,0}'::real[] AS nan;
-- the function is STRICT: a NULL argument gives NULL
SELECT ('{1,2}'::real[] <=> NULL) IS NULL AS is_null,
       hannoy_cosine_distance(NULL, '{1,2}') IS NULL AS is_null;
-- the operator is its own commutator; the class is not the default for real[]
SELECT oprname, oprcom::regoper AS commutator, oprcode
  FROM pg_operator WHERE oid = '<=>(real[], real[])'::regoperator;
SELECT opcname, opcdefault FROM pg_opclass
  WHERE opcname = 'real_cosine_ops' AND opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hannoy');

--
-- 300 rows: row i points at the angle 0.1 * i radians, with length
-- 1 + i % 3 (which cosine ignores), so its distance to (1, 0) is
-- 1 - cos(0.1 * i).  Every 50th row (0, 50, ..., 250) has a NULL vector and
-- rows 25, 75, ..., 275 have the zero vector (0, 0).
--
CREATE TABLE cosine_test (id int PRIMARY KEY, v real[]);
INSERT INTO cosine_test
  SELECT i, CASE WHEN i % 50 = 0 THEN NULL
                 WHEN i % 50 = 25 THEN '{0,0}'::real[]
                 ELSE ARRAY[(1 + i % 3) * cos(0.1 * i), (1 + i % 3) * sin(0.1 * i)]::real[] END
  FROM generate_series(0, 299) i;
CREATE INDEX cosine_test_v ON cosine_test USING hannoy (v real_cosine_ops);

-- a wide search makes the index exact on 300 rows
SET hannoy.ef_search = 300;
SET enable_seqscan = off;

-- the index answers the top-10 query
EXPLAIN (COSTS OFF)
SELECT id FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 10;

-- The ten rows nearest to (1, 0) in angle, as the index returns them, next
-- to 1 - cos(0.1 * id) computed in double precision: row 63 points at
-- 6.3 rad, 0.017 rad past a full turn; row 251 at 25.1 rad, 0.033 rad short
-- of four turns; and so on.  No two of the 11 nearest rows are equally far,
-- so the top 10 is unique.
SELECT row_number() OVER () AS rank, id, round(dist::numeric, 6) AS dist,
       round((1 - cos(0.1 * id))::numeric, 6) AS dist_by_hand
  FROM (SELECT id, v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 10) s;

-- the same query answered by a sequential scan and a sort gives the same
-- ids in the same order with bit-for-bit the same distances
CREATE TEMP TABLE cosine_by_index AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 10) s;
RESET enable_seqscan;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM cosine_test ORDER BY v <=> '{1,0}', id LIMIT 10;
CREATE TEMP TABLE cosine_by_seqscan AS
  SELECT array_agg(id) AS ids, array_agg(dist) AS dists
  FROM (SELECT id, v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}', id LIMIT 10) s;
RESET enable_indexscan;
SELECT i.ids = s.ids AS same_ids, i.dists = s.dists AS same_distances, i.ids
  FROM cosine_by_index i, cosine_by_seqscan s;

-- The whole table in index order with a wide search: distances never
-- decrease (the order the index reports agrees exactly with the operator),
-- the distances are exactly those of a sorted sequential scan (where NaN
-- sorts after every number and NULL last), every row comes once, the 6
-- zero vectors (NaN) come after the 288 others and the 6 NULL rows last.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM cosine_test ORDER BY v <=> '{1,0}';
CREATE TEMP TABLE cosine_full AS
  SELECT row_number() OVER () AS pos, id, dist
  FROM (SELECT id, v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}') s;
RESET enable_seqscan;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance,
       count(*) FILTER (WHERE dist = 'NaN') AS nan_distance
  FROM cosine_full;
SELECT count(*) AS out_of_order
  FROM cosine_full a JOIN cosine_full b ON b.pos = a.pos + 1
  WHERE b.dist < a.dist;
SELECT array_agg(dist ORDER BY pos) IS NOT DISTINCT FROM
       (SELECT array_agg(v <=> '{1,0}' ORDER BY v <=> '{1,0}') FROM cosine_test)
       AS same_distances_as_seqscan
  FROM cosine_full;
-- positions 289 to 294: the zero vectors; 295 to 300: the NULL rows (in no
-- particular order within each group)
SELECT min(pos) AS first_pos, max(pos) AS last_pos, min(dist) AS dist,
       array_agg(id ORDER BY id) AS ids
  FROM cosine_full WHERE pos > 288 GROUP BY pos > 294 ORDER BY 1;
SELECT round(max(dist)::numeric, 4) AS farthest_of_the_first_288
  FROM cosine_full WHERE pos <= 288;

-- With the default, narrow search (hannoy.ef_search = 40) an unbounded scan
-- still returns all 300 rows: it never stops early, and the zero and NULL
-- rows still come last.
RESET hannoy.ef_search;
SHOW hannoy.ef_search;
SET enable_seqscan = off;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids
  FROM (SELECT id FROM cosine_test ORDER BY v <=> '{1,0}') s;
SELECT count(*) FILTER (WHERE dist = 'NaN') AS nan_distance,
       count(*) FILTER (WHERE dist IS NULL) AS null_distance
  FROM (SELECT v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}' OFFSET 288) s;
SELECT array_agg(dist IS NULL ORDER BY pos) AS last_twelve_is_null
  FROM (SELECT row_number() OVER () AS pos, dist
          FROM (SELECT v <=> '{1,0}' AS dist
                  FROM cosine_test ORDER BY v <=> '{1,0}' OFFSET 288) s) t;
SELECT count(*) FILTER (WHERE dist <> 'NaN') AS first_288_have_numbers
  FROM (SELECT v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 288) s;
RESET enable_seqscan;

--
-- Rows inserted after the build are found.
--
SET hannoy.ef_search = 400;
SET enable_seqscan = off;
-- row 1000 points exactly along the query (twice as long: still 0 apart),
-- row 1001 is a zero vector (NaN), row 1002 has no vector (NULL)
INSERT INTO cosine_test VALUES (1000, '{2,0}'), (1001, '{0,0}'), (1002, NULL);
SELECT id, round(dist::numeric, 6) AS dist
  FROM (SELECT id, v <=> '{1,0}' AS dist
          FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 3) s;
SELECT count(*) AS rows, count(dist) AS with_distance,
       count(*) FILTER (WHERE dist = 'NaN') AS nan_distance
  FROM (SELECT v <=> '{1,0}' AS dist FROM cosine_test ORDER BY v <=> '{1,0}') s;
-- a row inserted in the current transaction is found by the same
-- transaction's scans, and is gone after ROLLBACK
BEGIN;
INSERT INTO cosine_test VALUES (1003, '{0,5}');
SELECT id FROM cosine_test ORDER BY v <=> '{0,1}' LIMIT 1;
ROLLBACK;
SELECT id FROM cosine_test ORDER BY v <=> '{0,1}' LIMIT 1;
SELECT count(*) AS rows FROM (SELECT id FROM cosine_test ORDER BY v <=> '{0,1}') s;
-- rows deleted are no longer returned
DELETE FROM cosine_test WHERE id IN (63, 1000);
SELECT id FROM cosine_test ORDER BY v <=> '{1,0}' LIMIT 2;
RESET enable_seqscan;
RESET hannoy.ef_search;

--
-- An index built on an empty table works once it is filled: 100 rows at
-- the angle 0.1 * i radians, plus one zero vector and one NULL row.
--
CREATE TABLE cosine_empty (id int PRIMARY KEY, v real[]);
CREATE INDEX cosine_empty_v ON cosine_empty USING hannoy (v real_cosine_ops);
SET enable_seqscan = off;
-- nothing to find yet
SELECT count(*) FROM (SELECT id FROM cosine_empty ORDER BY v <=> '{1,1}') s;
-- the first row is a zero vector: it fixes nothing, the next rows still index
INSERT INTO cosine_empty VALUES (100, '{0,0}');
INSERT INTO cosine_empty
  SELECT i, ARRAY[(1 + i % 3) * cos(0.1 * i), (1 + i % 3) * sin(0.1 * i)]::real[]
  FROM generate_series(0, 99) i;
INSERT INTO cosine_empty VALUES (101, NULL);
SET hannoy.ef_search = 100;
EXPLAIN (COSTS OFF)
SELECT id FROM cosine_empty ORDER BY v <=> '{0,1}' LIMIT 5;
-- nearest to (0, 1), at pi/2 = 1.5708 rad: row 16 (1.6 rad), row 79
-- (7.9 rad = 1.6168 after a turn), row 78 (1.5168), row 15 (1.5), row 17
-- (1.7); the next, row 80 (1.7168), is farther than all five
SELECT id, round(dist::numeric, 6) AS dist,
       round((1 - cos(0.1 * id - pi() / 2))::numeric, 6) AS dist_by_hand
  FROM (SELECT id, v <=> '{0,1}' AS dist
          FROM cosine_empty ORDER BY v <=> '{0,1}' LIMIT 5) s;
SELECT count(*) AS rows, count(dist) AS with_distance,
       count(*) FILTER (WHERE dist = 'NaN') AS nan_distance
  FROM (SELECT v <=> '{0,1}' AS dist FROM cosine_empty ORDER BY v <=> '{0,1}') s;
RESET enable_seqscan;
RESET hannoy.ef_search;

DROP TABLE cosine_test, cosine_empty;
