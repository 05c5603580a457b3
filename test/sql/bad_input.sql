-- bad_input: every malformed vector, bit string or index definition is a
-- clear error, and a failed statement writes nothing.
--
-- Vectors are real[] values with one dimension, 1 to 16000 elements, no
-- NULL elements and only finite values; an index also requires every
-- vector to have the dimension count of its first one.  Bit strings in a
-- hamming index must all have the same, non-zero length.  The row count
-- of each table is shown before and after the failing statements.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

CREATE TABLE bad_input (id int PRIMARY KEY, v real[]);
INSERT INTO bad_input VALUES (1, '{1,2,3}'), (2, '{4,5,6}'), (3, '{7,8,9}');
CREATE INDEX bad_input_v ON bad_input USING hannoy (v);
SELECT count(*) AS rows_before FROM bad_input;

--
-- Inserts into an indexed table
--
-- wrong dimension count: the index holds 3-dimensional vectors
INSERT INTO bad_input VALUES (10, '{1,2}');
INSERT INTO bad_input VALUES (10, '{1,2,3,4}');
-- a multi-row insert whose second row is bad writes neither row
INSERT INTO bad_input VALUES (10, '{1,2,3}'), (11, '{1,2}');
-- an update to a bad vector changes nothing
UPDATE bad_input SET v = '{1,2}' WHERE id = 1;
-- NaN and infinite elements (the message names the element)
INSERT INTO bad_input VALUES (10, '{1,NaN,3}');
INSERT INTO bad_input VALUES (10, '{1,2,Infinity}');
INSERT INTO bad_input VALUES (10, '{-Infinity,2,3}');
-- a NULL element (a NULL vector is fine; a vector with a hole is not)
INSERT INTO bad_input VALUES (10, '{1,NULL,3}');
-- a multi-dimensional array, even one with 3 elements
INSERT INTO bad_input VALUES (10, '{{1,2,3},{4,5,6}}');
INSERT INTO bad_input VALUES (10, '{{1,2,3}}');
-- an empty array
INSERT INTO bad_input VALUES (10, '{}');
-- more than 16000 dimensions
INSERT INTO bad_input VALUES (10, array_fill(1::real, ARRAY[16001]));
-- nothing was written: the same three rows as before
SELECT count(*) AS rows_after FROM bad_input;
SELECT * FROM bad_input ORDER BY id;
-- and the index still answers, with exactly these rows
SET enable_seqscan = off;
SELECT id FROM bad_input ORDER BY v <-> '{1,2,3}';
RESET enable_seqscan;

-- The checks belong to the index and the operators, not to real[]: a table
-- without a hannoy index stores such arrays, and the operators reject them.
CREATE TABLE bad_input_plain (id int, v real[]);
INSERT INTO bad_input_plain VALUES (1, '{1,NaN,3}'), (2, '{1,2}');
SELECT count(*) FROM bad_input_plain;
SELECT id, v <-> '{1,2,3}' FROM bad_input_plain WHERE id = 1;
SELECT id, v <-> '{1,2,3}' FROM bad_input_plain WHERE id = 2;
-- so building an index on them fails, and leaves no index behind
CREATE INDEX bad_input_plain_v ON bad_input_plain USING hannoy (v);
DELETE FROM bad_input_plain WHERE id = 1;
INSERT INTO bad_input_plain VALUES (3, '{1,2,3}');
CREATE INDEX bad_input_plain_v ON bad_input_plain USING hannoy (v);
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'bad_input_plain'::regclass;
DROP TABLE bad_input_plain;

--
-- Operators and functions
--
-- arrays of different lengths, for each operator and function
SELECT '{1,2}'::real[] <-> '{1,2,3}'::real[];
SELECT '{1,2}'::real[] <=> '{1,2,3}'::real[];
SELECT '{1,2}'::real[] <#> '{1,2,3}'::real[];
SELECT '{1,2}'::real[] <+> '{1,2,3}'::real[];
SELECT hannoy_l2_distance('{1,2,3}', '{1,2}');
SELECT hannoy_cosine_distance('{1,2,3}', '{1,2}');
SELECT hannoy_negative_inner_product('{1,2,3}', '{1,2}');
SELECT hannoy_l1_distance('{1,2,3}', '{1,2}');
-- malformed arrays on either side
SELECT '{1,NaN}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <=> '{Infinity,2}'::real[];
SELECT '{1,NULL}'::real[] <#> '{1,2}'::real[];
SELECT '{}'::real[] <+> '{}'::real[];
SELECT '{{1,2},{3,4}}'::real[] <-> '{{1,2},{3,4}}'::real[];
SELECT array_fill(1::real, ARRAY[16001]) <-> array_fill(1::real, ARRAY[16001]);
-- a query vector of the wrong length, or a malformed one, given to the index
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM bad_input ORDER BY v <-> '{1,2}' LIMIT 1;
SELECT id FROM bad_input ORDER BY v <-> '{1,2}' LIMIT 1;
SELECT id FROM bad_input ORDER BY v <-> '{1,2,3,4}' LIMIT 1;
SELECT id FROM bad_input ORDER BY v <-> '{1,NaN,3}' LIMIT 1;
SELECT id FROM bad_input ORDER BY v <-> '{}' LIMIT 1;
RESET enable_seqscan;

--
-- Bit strings
--
-- the operator and its function need equally long strings
SELECT B'101' <^> B'10';
SELECT hannoy_hamming_distance(B'1', B'10');
-- more than 16000 * 64 = 1024000 bits
SELECT repeat('1', 1024001)::varbit <^> repeat('0', 1024001)::varbit;
-- A bit(n) column already rejects other lengths; a varbit column can use
-- the bit_hamming_ops class, and then the index requires one length.
CREATE TABLE bad_bits (id int PRIMARY KEY, b varbit);
INSERT INTO bad_bits VALUES (1, B'1010'), (2, B'0110');
CREATE INDEX bad_bits_b ON bad_bits USING hannoy (b);
SELECT count(*) AS rows_before FROM bad_bits;
INSERT INTO bad_bits VALUES (10, B'10101');
INSERT INTO bad_bits VALUES (10, B'101');
INSERT INTO bad_bits VALUES (10, B'1111'), (11, B'11');
INSERT INTO bad_bits VALUES (10, B'');
SELECT count(*) AS rows_after FROM bad_bits;
SET enable_seqscan = off;
SELECT id FROM bad_bits ORDER BY b <^> B'1' LIMIT 1;
-- both rows are 1 bit away from 1110 (listed by id)
SELECT id, dist FROM (SELECT id, b <^> B'1110' AS dist FROM bad_bits ORDER BY b <^> B'1110') s
  ORDER BY dist, id;
RESET enable_seqscan;
DROP TABLE bad_bits;

--
-- Index definitions hannoy does not support
--
CREATE TABLE bad_index (id int, t text, f float8[], v real[], b bit(8));
-- more than one column
CREATE INDEX ON bad_index USING hannoy (v, id);
CREATE INDEX ON bad_index USING hannoy (v real_l2_ops, v real_cosine_ops);
-- types without an operator class: int4, text, float8[]
CREATE INDEX ON bad_index USING hannoy (id);
CREATE INDEX ON bad_index USING hannoy (t);
CREATE INDEX ON bad_index USING hannoy (f);
-- an operator class of another type
CREATE INDEX ON bad_index USING hannoy (id real_l2_ops);
CREATE INDEX ON bad_index USING hannoy (v bit_hamming_ops);
CREATE INDEX ON bad_index USING hannoy (b real_cosine_ops);
-- unique indexes and included columns
CREATE UNIQUE INDEX ON bad_index USING hannoy (v);
CREATE INDEX ON bad_index USING hannoy (v) INCLUDE (id);
-- none was created
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'bad_index'::regclass;
DROP TABLE bad_index;

--
-- A zero vector under cosine has no direction and no graph node, but it is
-- still a vector of the index: it must have the index's dimension count
-- too, whether it comes before or after the first non-zero vector.
--
CREATE TABLE bad_zero (id int PRIMARY KEY, v real[]);
CREATE INDEX bad_zero_v ON bad_zero USING hannoy (v real_cosine_ops);
INSERT INTO bad_zero VALUES (1, '{1,2}');
INSERT INTO bad_zero VALUES (2, '{0,0,0}');
SELECT count(*) AS rows FROM bad_zero;
TRUNCATE bad_zero;
DROP INDEX bad_zero_v;
CREATE INDEX bad_zero_v ON bad_zero USING hannoy (v real_cosine_ops);
INSERT INTO bad_zero VALUES (1, '{0,0,0}');
INSERT INTO bad_zero VALUES (2, '{1,2}');
SELECT count(*) AS rows FROM bad_zero;
-- the same at build time
DROP INDEX bad_zero_v;
TRUNCATE bad_zero;
INSERT INTO bad_zero VALUES (1, '{0,0,0}'), (2, '{1,2}');
CREATE INDEX bad_zero_v ON bad_zero USING hannoy (v real_cosine_ops);
SELECT count(*) AS hannoy_indexes FROM pg_class WHERE relname = 'bad_zero_v';
DROP TABLE bad_zero;

--
-- 16000 dimensions, the maximum, work: three rows whose elements are all
-- 1, 2 and 3; the query's elements are all 1.1, so the distances are
-- |i - 1.1| * sqrt(16000) = |i - 1.1| * 126.491106.  They are shown to one
-- decimal: summing 16000 single-precision terms leaves an error in the
-- fifth digit that depends on the CPU's distance kernels.
--
CREATE TABLE wide (id int PRIMARY KEY, v real[]);
INSERT INTO wide SELECT i, array_fill(i::real, ARRAY[16000]) FROM generate_series(1, 3) i;
CREATE INDEX wide_v ON wide USING hannoy (v);
-- the query vector comes from a table, so that plans do not print 16000 numbers
CREATE TABLE wide_query (q real[]);
INSERT INTO wide_query VALUES (array_fill(1.1::real, ARRAY[16000]));
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM wide ORDER BY v <-> (SELECT q FROM wide_query) LIMIT 3;
SELECT id, array_length(v, 1) AS dims, round(dist::numeric, 1) AS dist,
       round(abs(id - 1.1) * sqrt(16000)::numeric, 1) AS dist_by_hand
  FROM (SELECT id, v, v <-> (SELECT q FROM wide_query) AS dist
          FROM wide ORDER BY v <-> (SELECT q FROM wide_query) LIMIT 3) s;
-- a row inserted after the build, all elements 1.15: 0.05 * 126.491106
-- = 6.3 away, the nearest now
INSERT INTO wide VALUES (4, array_fill(1.15::real, ARRAY[16000]));
SELECT id, round(dist::numeric, 1) AS dist
  FROM (SELECT id, v <-> (SELECT q FROM wide_query) AS dist
          FROM wide ORDER BY v <-> (SELECT q FROM wide_query) LIMIT 2) s;
-- 16001 dimensions are still refused here
INSERT INTO wide VALUES (5, array_fill(1::real, ARRAY[16001]));
SELECT count(*) AS rows FROM wide;
RESET enable_seqscan;
DROP TABLE wide, wide_query;

DROP TABLE bad_input;
