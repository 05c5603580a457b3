-- hamming: the bit_hamming_ops operator class, hamming distance on bit (<^>).
--
-- Checks the operator and its function on values a reader can count by
-- hand, then an index on 300 16-bit strings: its nearest rows with a wide
-- search equal a sequential scan's, an unbounded scan returns every row
-- (NULL strings last), rows inserted after the build are found, and an
-- index built on an empty table works once rows arrive.
--
-- The graph is randomised per build, so nothing below shows an order the
-- index does not guarantee: hannoy.ef_search is at least the row count
-- wherever exact results are shown.  Hamming distances are small integers,
-- so many rows are equally far: rows with equal distances are listed by
-- id, and each LIMIT below ends where the distance changes, so the set of
-- rows it returns is unique.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

--
-- The operator and its function: the number of positions where the bits differ
--
-- 1010 and 0110 differ in the first two bits
SELECT B'1010' <^> B'0110' AS two;
SELECT hannoy_hamming_distance(B'1010', B'0110') AS two;
-- every bit differs: 4; identical strings: 0; the order of the arguments
-- does not matter; a length that is not a multiple of 8 (the padding of
-- the last byte does not count): 2
SELECT B'1111' <^> B'0000' AS four,
       B'1011' <^> B'1011' AS zero,
       B'0110' <^> B'1010' AS two,
       B'100000001' <^> B'000000000' AS two;
-- long strings: 200 ones against 200 zeros, and 1010... against 0101...
SELECT repeat('1', 200)::bit(200) <^> repeat('0', 200)::bit(200) AS two_hundred,
       repeat('10', 100)::bit(200) <^> repeat('01', 100)::bit(200) AS two_hundred,
       repeat('1100', 50)::bit(200) <^> repeat('1010', 50)::bit(200) AS one_hundred;
-- the function is STRICT: a NULL argument gives NULL
SELECT (B'1010' <^> NULL) IS NULL AS is_null,
       hannoy_hamming_distance(NULL, B'1010') IS NULL AS is_null;
-- the operator is its own commutator; the class is the default for bit
SELECT oprname, oprcom::regoper AS commutator, oprcode
  FROM pg_operator WHERE oid = '<^>(bit, bit)'::regoperator;
SELECT opcname, opcdefault FROM pg_opclass
  WHERE opcname = 'bit_hamming_ops' AND opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hannoy');

--
-- 300 rows: row i holds the low 16 bits of i * 2654435761 (an odd
-- multiplier, so no two rows are equal); every 50th row (0, 50, ..., 250)
-- is NULL.
--
CREATE TABLE hamming_test (id int PRIMARY KEY, v bit(16));
INSERT INTO hamming_test
  SELECT i, CASE WHEN i % 50 = 0 THEN NULL
                 ELSE (i::bigint * 2654435761 % 65536)::int::bit(16) END
  FROM generate_series(0, 299) i;
CREATE INDEX hamming_test_v ON hamming_test USING hannoy (v);

-- a wide search makes the index exact on 300 rows
SET hannoy.ef_search = 300;
SET enable_seqscan = off;

-- the index answers the query
EXPLAIN (COSTS OFF)
SELECT id FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 11;

-- The 11 rows nearest to 1010110011110000, next to the differing bits
-- counted by bit_count(v # query): row 176 differs in 3 bits, ten rows in 4
-- bits, and the next rows in 5, so these 11 rows are the only right answer.
SELECT id, v, dist, bit_count(v # B'1010110011110000') AS dist_by_hand
  FROM (SELECT id, v, v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 11) s
  ORDER BY dist, id;

-- a sequential scan and a sort finds the same 11 rows, with the same
-- distances in the same order
CREATE TEMP TABLE hamming_by_index AS
  SELECT array_agg(id ORDER BY id) AS ids, array_agg(dist ORDER BY pos) AS dists
  FROM (SELECT row_number() OVER () AS pos, id, dist
          FROM (SELECT id, v <^> B'1010110011110000' AS dist
                  FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 11) s) t;
RESET enable_seqscan;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM hamming_test ORDER BY v <^> B'1010110011110000', id LIMIT 11;
CREATE TEMP TABLE hamming_by_seqscan AS
  SELECT array_agg(id ORDER BY id) AS ids, array_agg(dist ORDER BY pos) AS dists
  FROM (SELECT row_number() OVER () AS pos, id, dist
          FROM (SELECT id, v <^> B'1010110011110000' AS dist
                  FROM hamming_test ORDER BY v <^> B'1010110011110000', id LIMIT 11) s) t;
RESET enable_indexscan;
SELECT i.ids = s.ids AS same_ids, i.dists = s.dists AS same_distances, i.dists
  FROM hamming_by_index i, hamming_by_seqscan s;

-- The whole table in index order with a wide search: distances never
-- decrease (the order the index reports agrees exactly with the operator),
-- the distances are exactly those of a sorted sequential scan, every row
-- comes once, and the 6 NULL rows come last.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM hamming_test ORDER BY v <^> B'1010110011110000';
CREATE TEMP TABLE hamming_full AS
  SELECT row_number() OVER () AS pos, id, dist
  FROM (SELECT id, v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000') s;
RESET enable_seqscan;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, count(dist) AS with_distance
  FROM hamming_full;
SELECT count(*) AS out_of_order
  FROM hamming_full a JOIN hamming_full b ON b.pos = a.pos + 1
  WHERE b.dist < a.dist;
SELECT array_agg(dist ORDER BY pos) IS NOT DISTINCT FROM
       (SELECT array_agg(v <^> B'1010110011110000' ORDER BY v <^> B'1010110011110000')
          FROM hamming_test)
       AS same_distances_as_seqscan
  FROM hamming_full;
-- how many rows are at each distance, in index order
SELECT dist, count(*), min(pos) AS first_pos, max(pos) AS last_pos
  FROM hamming_full GROUP BY dist ORDER BY min(pos);
-- positions 295 to 300 are the NULL rows, in no particular order among themselves
SELECT min(pos) AS first_pos, max(pos) AS last_pos, bool_and(dist IS NULL) AS all_null,
       array_agg(id ORDER BY id) AS ids
  FROM hamming_full WHERE pos > 294;

-- With the default, narrow search (hannoy.ef_search = 40) an unbounded scan
-- still returns all 300 rows: it never stops early, and the NULL rows still
-- come last.
RESET hannoy.ef_search;
SHOW hannoy.ef_search;
SET enable_seqscan = off;
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids
  FROM (SELECT id FROM hamming_test ORDER BY v <^> B'1010110011110000') s;
SELECT bool_and(dist IS NULL) AS last_six_null, count(*)
  FROM (SELECT v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000' OFFSET 294) s;
SELECT count(dist) AS first_294_have_distances
  FROM (SELECT v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 294) s;
RESET enable_seqscan;

--
-- Rows inserted after the build are found.
--
SET hannoy.ef_search = 400;
SET enable_seqscan = off;
-- row 1000 equals the query, row 1001 is NULL
INSERT INTO hamming_test VALUES (1000, B'1010110011110000'), (1001, NULL);
SELECT id, dist
  FROM (SELECT id, v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 2) s;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000') s;
-- a row inserted in the current transaction is found by the same
-- transaction's scans, and is gone after ROLLBACK
BEGIN;
INSERT INTO hamming_test VALUES (1002, B'1111111111111111');
SELECT id, v <^> B'1111111111111111' AS dist
  FROM hamming_test ORDER BY v <^> B'1111111111111111' LIMIT 1;
ROLLBACK;
SELECT min(dist) > 0 AS no_row_of_ones
  FROM (SELECT v <^> B'1111111111111111' AS dist
          FROM hamming_test ORDER BY v <^> B'1111111111111111' LIMIT 1) s;
SELECT count(*) AS rows
  FROM (SELECT id FROM hamming_test ORDER BY v <^> B'1111111111111111') s;
-- rows deleted are no longer returned
DELETE FROM hamming_test WHERE id IN (176, 1000);
SELECT min(dist) AS nearest
  FROM (SELECT v <^> B'1010110011110000' AS dist
          FROM hamming_test ORDER BY v <^> B'1010110011110000' LIMIT 1) s;
RESET enable_seqscan;
RESET hannoy.ef_search;

--
-- An index built on an empty table works once it is filled: 100 rows made
-- the same way, plus one NULL row.
--
CREATE TABLE hamming_empty (id int PRIMARY KEY, v bit(16));
CREATE INDEX hamming_empty_v ON hamming_empty USING hannoy (v bit_hamming_ops);
SET enable_seqscan = off;
-- nothing to find yet
SELECT count(*) FROM (SELECT id FROM hamming_empty ORDER BY v <^> B'0000000000000000') s;
INSERT INTO hamming_empty
  SELECT i, (i::bigint * 2654435761 % 65536)::int::bit(16) FROM generate_series(0, 99) i;
INSERT INTO hamming_empty VALUES (100, NULL);
SET hannoy.ef_search = 100;
EXPLAIN (COSTS OFF)
SELECT id FROM hamming_empty ORDER BY v <^> B'0101100110100101' LIMIT 10;
-- nearest to 0101100110100101: rows 1, 53 and 87 differ in 3 bits, row 21
-- in 4, six rows in 5, and the next ones in 6
SELECT id, v, dist, bit_count(v # B'0101100110100101') AS dist_by_hand
  FROM (SELECT id, v, v <^> B'0101100110100101' AS dist
          FROM hamming_empty ORDER BY v <^> B'0101100110100101' LIMIT 10) s
  ORDER BY dist, id;
SELECT count(*) AS rows, count(dist) AS with_distance
  FROM (SELECT v <^> B'0101100110100101' AS dist
          FROM hamming_empty ORDER BY v <^> B'0101100110100101') s;
RESET enable_seqscan;
RESET hannoy.ef_search;

DROP TABLE hamming_test, hamming_empty;
