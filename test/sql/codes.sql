-- codes: an index of 256 or more dimensions walks on 8-bit codes of its
-- vectors (DESIGN.md "Codes"), yet every row a scan returns carries the
-- exact distance the operator computes, and an unbounded scan returns every
-- row once.
--
-- 400 rows of 256 dimensions with fractional values, so the codes are not
-- exact; queries compare the index scan with a sequential scan.  Rows with
-- equal distances are listed by id, and nothing shows an order the index
-- does not guarantee: the first hannoy.ef_search rows come nearest first.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

CREATE TABLE codes_t (id int PRIMARY KEY, v real[]);
INSERT INTO codes_t
  SELECT i, ARRAY(SELECT ((i * 7919 + d * 104729) % 1000) / 37.0
                  FROM generate_series(1, 256) d)::real[]
  FROM generate_series(1, 400) i;
INSERT INTO codes_t VALUES (401, NULL);
CREATE INDEX codes_l2 ON codes_t USING hannoy (v real_l2_ops);
CREATE INDEX codes_cos ON codes_t USING hannoy (v real_cosine_ops);

-- every vector has a code of one byte per dimension
SELECT live_items, codes, code_bytes FROM hannoy_index_stats('codes_l2');
SELECT live_items, codes, code_bytes FROM hannoy_index_stats('codes_cos');

-- the first window: the same rows, at the same distances, as a sequential scan
SET hannoy.ef_search = 400;
SET enable_seqscan = off;
CREATE TEMP TABLE by_index AS
  SELECT id, v <-> (SELECT v FROM codes_t WHERE id = 17) AS d, row_number() OVER () AS pos
  FROM (SELECT id, v FROM codes_t ORDER BY v <-> (SELECT v FROM codes_t WHERE id = 17)) s;
CREATE TEMP TABLE by_index_cos AS
  SELECT id, v <=> (SELECT v FROM codes_t WHERE id = 17) AS d, row_number() OVER () AS pos
  FROM (SELECT id, v FROM codes_t ORDER BY v <=> (SELECT v FROM codes_t WHERE id = 17)) s;
RESET enable_seqscan;
SET enable_indexscan = off;
CREATE TEMP TABLE exact AS
  SELECT id, v <-> (SELECT v FROM codes_t WHERE id = 17) AS d FROM codes_t;
CREATE TEMP TABLE exact_cos AS
  SELECT id, v <=> (SELECT v FROM codes_t WHERE id = 17) AS d FROM codes_t;
RESET enable_indexscan;

-- every row once (the NULL one last), each at its exact distance, in order
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_rows,
       bool_and(i.d IS NOT DISTINCT FROM e.d) AS exact_distances,
       max(pos) FILTER (WHERE i.d IS NULL) AS null_row_at
FROM by_index i JOIN exact e USING (id);
SELECT bool_and(a.d <= b.d) AS first_window_in_order
FROM by_index a JOIN by_index b ON b.pos = a.pos + 1 WHERE b.pos <= 50;
SELECT count(*) AS rows, bool_and(i.d IS NOT DISTINCT FROM e.d) AS exact_distances
FROM by_index_cos i JOIN exact_cos e USING (id);
SELECT bool_and(a.d <= b.d) AS first_window_in_order
FROM by_index_cos a JOIN by_index_cos b ON b.pos = a.pos + 1 WHERE b.pos <= 50;

-- the nearest five, as a user asks for them (a search as wide as the table:
-- the graph is randomised per build)
SELECT id, round((v <-> (SELECT v FROM codes_t WHERE id = 17))::numeric, 4) AS distance
FROM codes_t ORDER BY v <-> (SELECT v FROM codes_t WHERE id = 17), id LIMIT 5;
RESET hannoy.ef_search;

-- a row far outside the range the build saw gets a clamped code; VACUUM
-- frees the codes of deleted rows; the index verifies clean throughout
INSERT INTO codes_t
  SELECT 500, ARRAY(SELECT 1000.0 * d FROM generate_series(1, 256) d)::real[];
SELECT live_items, codes FROM hannoy_index_stats('codes_l2');
SELECT * FROM hannoy_verify('codes_l2');
DELETE FROM codes_t WHERE id % 4 = 0;
VACUUM codes_t;
SELECT live_items, codes FROM hannoy_index_stats('codes_l2');
SELECT * FROM hannoy_verify('codes_l2');
SELECT * FROM hannoy_verify('codes_cos');

-- below 256 dimensions, and for an index created empty, there are no codes
CREATE TABLE codes_small (id int, v real[]);
INSERT INTO codes_small SELECT i, ARRAY[i, i % 7, i % 11]::real[] FROM generate_series(1, 200) i;
CREATE INDEX codes_small_idx ON codes_small USING hannoy (v);
CREATE TABLE codes_empty (id int, v real[]);
CREATE INDEX codes_empty_idx ON codes_empty USING hannoy (v);
INSERT INTO codes_empty SELECT id, v FROM codes_t WHERE v IS NOT NULL;
SELECT live_items, codes, code_bytes FROM hannoy_index_stats('codes_small_idx');
SELECT live_items, codes, code_bytes FROM hannoy_index_stats('codes_empty_idx');

DROP TABLE codes_t, codes_small, codes_empty;
