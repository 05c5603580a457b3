-- planner: when the planner uses a hannoy index, and that the plans it
-- makes with one return the right rows.
--
-- A hannoy index answers only ORDER BY <its operator> (ascending), so the
-- planner must use it for nearest-neighbour queries and never for anything
-- else: not without an ORDER BY (even when sequential scans are disabled
-- and a partial index offers a path), not for another operator.  Plans
-- are shown with EXPLAIN (COSTS OFF); the rows of each plan are compared
-- with those of a sequential scan, with hannoy.ef_search at least the row
-- count so that the index is exact.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;
-- plans with sequential scans disabled cost enough to trigger JIT
SET jit = off;

-- 1000 rows, row i at (sin i, cos i, sin 0.37 i); no other index, so the
-- hannoy index is the only index the planner can choose
CREATE TABLE planner_test (id int, v real[]);
INSERT INTO planner_test
  SELECT i, ARRAY[sin(i), cos(i), sin(0.37 * i)]::real[] FROM generate_series(1, 1000) i;
CREATE INDEX planner_test_v ON planner_test USING hannoy (v);
ANALYZE planner_test;

--
-- The index answers ORDER BY v <-> constant LIMIT n with default settings
--
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;
-- with the distance in the select list too
EXPLAIN (COSTS OFF)
SELECT id, v <-> '{0.1,0.2,0.3}' AS dist FROM planner_test ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;
-- with the operands swapped (<-> is its own commutator)
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY '{0.1,0.2,0.3}' <-> v LIMIT 10;
-- with a WHERE clause, applied as a filter to the rows the index returns
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test WHERE id > 500 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;

-- The index is exact with a wide search: its top 10 equals a sequential
-- scan's, in the same order (no two of the 11 nearest rows are equally far)
SET hannoy.ef_search = 1000;
SET enable_seqscan = off;
CREATE TEMP TABLE planner_by_index AS
  SELECT array_agg(id) AS ids
  FROM (SELECT id FROM planner_test ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10) s;
RESET enable_seqscan;
SET enable_indexscan = off;
SELECT (SELECT ids FROM planner_by_index) =
       (SELECT array_agg(id) FROM (SELECT id FROM planner_test
                                     ORDER BY v <-> '{0.1,0.2,0.3}', id LIMIT 10) s)
       AS same_top_10,
       (SELECT ids FROM planner_by_index) AS ids;
SELECT count(DISTINCT d) AS distinct_distances_of_nearest_11
  FROM (SELECT v <-> '{0.1,0.2,0.3}' AS d FROM planner_test
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 11) s;
RESET enable_indexscan;
RESET hannoy.ef_search;

--
-- The index is never used without an ORDER BY on its operator, even with
-- sequential scans disabled (a hannoy scan cannot return rows unordered)
--
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM planner_test;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test WHERE v IS NOT NULL;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test WHERE id < 10;
-- and the queries return every row they should
SELECT count(*) FROM planner_test;
SELECT count(*) FROM planner_test WHERE v IS NOT NULL;
-- nor for ORDER BY the column itself, DESC, another operator, or the
-- distance function written as a function call
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <-> '{0.1,0.2,0.3}' DESC LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <=> '{0.1,0.2,0.3}' LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <#> '{0.1,0.2,0.3}' LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <+> '{0.1,0.2,0.3}' LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY hannoy_l2_distance(v, '{0.1,0.2,0.3}') LIMIT 10;
RESET enable_seqscan;

-- With a cosine index beside the l2 one, each operator picks its own index
CREATE INDEX planner_test_cos ON planner_test USING hannoy (v real_cosine_ops);
ANALYZE planner_test;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <=> '{0.1,0.2,0.3}' LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_test ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 10;
DROP INDEX planner_test_cos;

--
-- A partial index (WHERE id > 100) serves only queries whose WHERE implies
-- its predicate, and returns only the rows it covers
--
CREATE TABLE planner_partial (id int, v real[]);
INSERT INTO planner_partial SELECT * FROM planner_test;
CREATE INDEX planner_partial_v ON planner_partial USING hannoy (v) WHERE id > 100;
ANALYZE planner_partial;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_partial WHERE id > 100 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_partial WHERE id > 500 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5;
-- not implied: the index lacks rows the query needs
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_partial ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5;
EXPLAIN (COSTS OFF)
SELECT id FROM planner_partial WHERE id > 50 ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5;
-- The predicate makes the partial index a candidate for a query without
-- ORDER BY; it must not be used for it
EXPLAIN (COSTS OFF)
SELECT count(*) FROM planner_partial WHERE id > 100;
SELECT count(*) FROM planner_partial WHERE id > 100;
-- an unbounded scan of the partial index returns its 900 rows, all with id > 100
EXPLAIN (COSTS OFF)
SELECT id FROM planner_partial WHERE id > 100 ORDER BY v <-> '{0.1,0.2,0.3}';
SELECT count(*) AS rows, min(id) AS min_id, max(id) AS max_id
  FROM (SELECT id FROM planner_partial WHERE id > 100 ORDER BY v <-> '{0.1,0.2,0.3}') s;
-- its top 5 with a wide search equals a sequential scan's
SET hannoy.ef_search = 1000;
CREATE TEMP TABLE planner_partial_by_index AS
  SELECT array_agg(id) AS ids
  FROM (SELECT id FROM planner_partial WHERE id > 100
          ORDER BY v <-> '{0.1,0.2,0.3}' LIMIT 5) s;
RESET enable_seqscan;
SET enable_indexscan = off;
SELECT (SELECT ids FROM planner_partial_by_index) =
       (SELECT array_agg(id) FROM (SELECT id FROM planner_partial WHERE id > 100
                                     ORDER BY v <-> '{0.1,0.2,0.3}', id LIMIT 5) s)
       AS same_top_5;
RESET enable_indexscan;
RESET hannoy.ef_search;
DROP TABLE planner_partial;

--
-- LATERAL: a nested loop rescans the index once per outer row with that
-- row's vector as the query; each rescan returns the right rows
--
-- 6 query vectors, none equal to a row
CREATE TABLE planner_queries (qid int, q real[]);
INSERT INTO planner_queries
  SELECT j, ARRAY[sin(7.3 * j), cos(5.1 * j), 0.5 - j / 10.0]::real[] FROM generate_series(1, 6) j;
SET hannoy.ef_search = 1000;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT q.qid, n.id
  FROM planner_queries q
  CROSS JOIN LATERAL (SELECT t.id FROM planner_test t ORDER BY t.v <-> q.q LIMIT 3) n;
CREATE TEMP TABLE planner_lateral_by_index AS
  SELECT q.qid, array_agg(n.id ORDER BY n.rank) AS ids
  FROM planner_queries q
  CROSS JOIN LATERAL (SELECT t.id, row_number() OVER () AS rank
                        FROM (SELECT id FROM planner_test ORDER BY v <-> q.q LIMIT 3) t) n
  GROUP BY q.qid;
RESET enable_seqscan;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF)
SELECT q.qid, n.id
  FROM planner_queries q
  CROSS JOIN LATERAL (SELECT t.id FROM planner_test t ORDER BY t.v <-> q.q, t.id LIMIT 3) n;
CREATE TEMP TABLE planner_lateral_by_seqscan AS
  SELECT q.qid, array_agg(n.id ORDER BY n.rank) AS ids
  FROM planner_queries q
  CROSS JOIN LATERAL (SELECT t.id, row_number() OVER () AS rank
                        FROM (SELECT id FROM planner_test ORDER BY v <-> q.q, id LIMIT 3) t) n
  GROUP BY q.qid;
-- the 3rd and 4th nearest rows of every query are not equally far, so each top 3 is unique
SELECT q.qid, d[3] < d[4] AS top_3_unique
  FROM planner_queries q
  CROSS JOIN LATERAL (SELECT array_agg(d ORDER BY d) AS d
                        FROM (SELECT v <-> q.q AS d FROM planner_test
                                ORDER BY v <-> q.q LIMIT 4) s) x
  ORDER BY q.qid;
RESET enable_indexscan;
SELECT i.qid, i.ids, i.ids = s.ids AS same_as_seqscan
  FROM planner_lateral_by_index i JOIN planner_lateral_by_seqscan s USING (qid)
  ORDER BY i.qid;
RESET hannoy.ef_search;

--
-- Prepared statements: the query vector (and the limit) as parameters, in
-- a custom plan and in a generic plan
--
SET hannoy.ef_search = 1000;
SET enable_seqscan = off;
PREPARE planner_nearest(real[], int) AS
  SELECT id FROM planner_test ORDER BY v <-> $1 LIMIT $2;
EXPLAIN (COSTS OFF) EXECUTE planner_nearest('{0.1,0.2,0.3}', 5);
-- the first 3 of the top 10 shown above
EXECUTE planner_nearest('{0.1,0.2,0.3}', 3);
SET plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE planner_nearest('{0.1,0.2,0.3}', 5);
EXECUTE planner_nearest('{0.1,0.2,0.3}', 3);
-- the query vectors of the LATERAL test give the same top 3 as there
SELECT q AS q1 FROM planner_queries WHERE qid = 1 \gset
SELECT q AS q2 FROM planner_queries WHERE qid = 2 \gset
EXECUTE planner_nearest(:'q1', 3);
EXECUTE planner_nearest(:'q2', 3);
SELECT qid, ids FROM planner_lateral_by_seqscan WHERE qid IN (1, 2) ORDER BY qid;
-- a NULL parameter: every distance is NULL, all rows come back (in no
-- particular order)
PREPARE planner_all(real[]) AS
  SELECT count(*) AS rows, count(v <-> $1) AS with_distance
  FROM (SELECT v FROM planner_test ORDER BY v <-> $1) s;
EXPLAIN (COSTS OFF) EXECUTE planner_all(NULL);
EXECUTE planner_all(NULL);
EXECUTE planner_all('{0.1,0.2,0.3}');
RESET plan_cache_mode;
RESET enable_seqscan;
RESET hannoy.ef_search;
DEALLOCATE planner_nearest;
DEALLOCATE planner_all;

DROP TABLE planner_test, planner_queries;
