-- pgvector_coexist: hannoy installs beside pgvector 0.8 in the same schema.
--
-- pgvector is not installed here, so stand-ins with pgvector 0.8's names
-- and signatures are created first: the types vector, halfvec and
-- sparsevec (as simple composite types), the casts between vector and
-- real[], the functions l2_distance, inner_product, cosine_distance,
-- l1_distance, vector_dims, vector_norm, hamming_distance and
-- jaccard_distance, the operators <->, <#>, <=>, <+> on its types and <~>,
-- <%> on bit, and index access methods hnsw and ivfflat with operator
-- classes bit_hamming_ops, the name hannoy uses too.  Each stand-in
-- function raises a NOTICE naming itself, so the output shows which
-- function an operator called.  hannoy must then install without error,
-- and both sets of objects must work side by side.
--
-- Everything happens in a database of its own, so that dropping and
-- creating the extension touches no other test.
SELECT current_database() AS home_database \gset
SET client_min_messages = warning;
DROP DATABASE IF EXISTS hannoy_coexist;
RESET client_min_messages;
CREATE DATABASE hannoy_coexist;
\c hannoy_coexist

--
-- pgvector 0.8's names, as stand-ins
--
CREATE TYPE vector AS (x real[]);
CREATE TYPE halfvec AS (x real[]);
CREATE TYPE sparsevec AS (x real[]);

-- pgvector casts real[] to vector on assignment and vector to real[]
-- implicitly
CREATE FUNCTION array_to_vector(real[], integer, boolean) RETURNS vector
  AS $$ SELECT ROW($1)::vector $$ LANGUAGE sql IMMUTABLE STRICT;
CREATE FUNCTION vector_to_float4(vector, integer, boolean) RETURNS real[]
  AS $$ SELECT $1.x $$ LANGUAGE sql IMMUTABLE STRICT;
CREATE CAST (real[] AS vector) WITH FUNCTION array_to_vector(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (vector AS real[]) WITH FUNCTION vector_to_float4(vector, integer, boolean) AS IMPLICIT;

CREATE FUNCTION l2_distance(vector, vector) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in l2_distance(vector, vector)';
  RETURN (SELECT sqrt(sum((a - b) ^ 2)) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION inner_product(vector, vector) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in inner_product(vector, vector)';
  RETURN (SELECT sum(a * b) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION vector_negative_inner_product(vector, vector) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in vector_negative_inner_product(vector, vector)';
  RETURN (SELECT -sum(a * b) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION cosine_distance(vector, vector) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in cosine_distance(vector, vector)';
  RETURN (SELECT 1 - sum(a * b) / sqrt(sum(a * a) * sum(b * b)) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION l1_distance(vector, vector) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in l1_distance(vector, vector)';
  RETURN (SELECT sum(abs(a - b)) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION vector_dims(vector) RETURNS integer
  AS $$ SELECT cardinality($1.x) $$ LANGUAGE sql IMMUTABLE STRICT;
CREATE FUNCTION vector_norm(vector) RETURNS float8
  AS $$ SELECT sqrt(sum(a * a)) FROM unnest($1.x) AS u(a) $$ LANGUAGE sql IMMUTABLE STRICT;
-- pgvector overloads the same names for halfvec and sparsevec
CREATE FUNCTION l2_distance(halfvec, halfvec) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in l2_distance(halfvec, halfvec)';
  RETURN (SELECT sqrt(sum((a - b) ^ 2)) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION l2_distance(sparsevec, sparsevec) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in l2_distance(sparsevec, sparsevec)';
  RETURN (SELECT sqrt(sum((a - b) ^ 2)) FROM unnest($1.x, $2.x) AS u(a, b));
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
-- and takes bit for hamming and jaccard distances
CREATE FUNCTION hamming_distance(bit, bit) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in hamming_distance(bit, bit)';
  RETURN bit_count($1 # $2);
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;
CREATE FUNCTION jaccard_distance(bit, bit) RETURNS float8 AS $$
BEGIN
  RAISE NOTICE 'stand-in jaccard_distance(bit, bit)';
  RETURN 1 - bit_count($1 & $2)::float8 / bit_count($1 | $2);
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;

CREATE OPERATOR <-> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <#> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = vector_negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <=> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = cosine_distance, COMMUTATOR = '<=>');
CREATE OPERATOR <+> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = l1_distance, COMMUTATOR = '<+>');
CREATE OPERATOR <-> (LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <-> (LEFTARG = sparsevec, RIGHTARG = sparsevec, FUNCTION = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <~> (LEFTARG = bit, RIGHTARG = bit, FUNCTION = hamming_distance, COMMUTATOR = '<~>');
CREATE OPERATOR <%> (LEFTARG = bit, RIGHTARG = bit, FUNCTION = jaccard_distance, COMMUTATOR = '<%>');

-- pgvector's index access methods and its bit_hamming_ops operator
-- classes; these stand-ins borrow btree's handler and btree's bit
-- operators (enough for the names: btree refuses to build an index for
-- another access method, so none is built with them)
CREATE ACCESS METHOD hnsw TYPE INDEX HANDLER bthandler;
CREATE ACCESS METHOD ivfflat TYPE INDEX HANDLER bthandler;
CREATE OPERATOR CLASS bit_hamming_ops FOR TYPE bit USING hnsw AS
  OPERATOR 1 < , OPERATOR 2 <= , OPERATOR 3 = , OPERATOR 4 >= , OPERATOR 5 > ,
  FUNCTION 1 bitcmp(bit, bit);
CREATE OPERATOR CLASS bit_hamming_ops FOR TYPE bit USING ivfflat AS
  OPERATOR 1 < , OPERATOR 2 <= , OPERATOR 3 = , OPERATOR 4 >= , OPERATOR 5 > ,
  FUNCTION 1 bitcmp(bit, bit);

--
-- hannoy installs into the same schema without error
--
DROP EXTENSION IF EXISTS hannoy;
CREATE EXTENSION hannoy;
SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'hannoy';

-- every distance operator in the schema, with its types and function:
-- the stand-ins' and hannoy's side by side, none replaced
SELECT o.oprname, o.oprleft::regtype, o.oprright::regtype, o.oprcode,
       CASE WHEN d.objid IS NULL THEN 'stand-in' ELSE 'hannoy' END AS owner
  FROM pg_operator o
  LEFT JOIN pg_depend d ON d.classid = 'pg_operator'::regclass AND d.objid = o.oid
                       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  WHERE o.oprnamespace = 'public'::regnamespace
  ORDER BY o.oprname, o.oprleft::regtype::text;
-- pgvector's function names are still the stand-ins', hannoy's carry its prefix
SELECT p.oid::regprocedure AS function,
       CASE WHEN d.objid IS NULL THEN 'stand-in' ELSE 'hannoy' END AS owner
  FROM pg_proc p
  LEFT JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  WHERE p.pronamespace = 'public'::regnamespace
  ORDER BY p.proname, p.oid::regprocedure::text;
-- three operator classes named bit_hamming_ops, one per access method
SELECT c.opcname, a.amname, c.opcdefault
  FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
  WHERE c.opcname = 'bit_hamming_ops' ORDER BY a.amname;

--
-- Both work afterwards
--
-- the stand-ins, through their operators (each NOTICE names the function called)
SELECT ROW('{1,2}')::vector <-> ROW('{4,6}')::vector AS five;
SELECT ROW('{1,2,3}')::vector <#> ROW('{4,5,6}')::vector AS minus_32;
SELECT ROW('{1,0}')::vector <=> ROW('{0,1}')::vector AS one;
SELECT ROW('{1,2}')::vector <+> ROW('{4,6}')::vector AS seven;
SELECT ROW('{1,2}')::halfvec <-> ROW('{4,6}')::halfvec AS five;
SELECT ROW('{1,2}')::sparsevec <-> ROW('{4,6}')::sparsevec AS five;
SELECT inner_product(ROW('{1,2,3}')::vector, ROW('{4,5,6}')::vector) AS thirty_two;
SELECT vector_dims(ROW('{1,2,3}')::vector) AS three, vector_norm(ROW('{3,4}')::vector) AS five;
-- <~> still calls the stand-in hamming_distance; <%> the stand-in jaccard_distance:
-- 1010 and 0110 share one of three set bits, so 1 - 1/3
SELECT B'1010' <~> B'0110' AS two;
SELECT round((B'1010' <%> B'0110')::numeric, 4) AS two_thirds;
SELECT hamming_distance(B'1010', B'0110') AS two;
-- hannoy's operators and functions on real[] and bit (no NOTICE: no stand-in runs)
SELECT '{1,2}'::real[] <-> '{4,6}'::real[] AS five,
       '{1,2,3}'::real[] <#> '{4,5,6}'::real[] AS minus_32,
       '{1,0}'::real[] <=> '{0,1}'::real[] AS one,
       '{1,2}'::real[] <+> '{4,6}'::real[] AS seven;
SELECT B'1010' <^> B'0110' AS two, hannoy_hamming_distance(B'1010', B'0110') AS two;
-- a vector meeting a real[]: the implicit cast vector -> real[] makes it
-- hannoy's operator (no NOTICE)
SELECT ROW('{1,2}')::vector <-> '{4,6}'::real[] AS five;

-- hannoy indexes with hannoy's bit_hamming_ops (its default for bit,
-- and also when named) and real_l2_ops, on a table with a vector column
CREATE TABLE coexist (id int, b bit(4), r real[], v vector);
INSERT INTO coexist
  SELECT i, (i % 16)::bit(4), ARRAY[i, i % 5]::real[], ROW(ARRAY[i, i % 5]::real[])::vector
  FROM generate_series(1, 20) i;
CREATE INDEX coexist_b_hannoy ON coexist USING hannoy (b bit_hamming_ops);
CREATE INDEX coexist_r_hannoy ON coexist USING hannoy (r);
SELECT c.relname, a.amname, o.opcname
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am a ON a.oid = c.relam
  JOIN pg_opclass o ON o.oid = i.indclass[0]
  WHERE i.indrelid = 'coexist'::regclass ORDER BY c.relname;
SET enable_seqscan = off;
SET hannoy.ef_search = 20;
EXPLAIN (COSTS OFF) SELECT id FROM coexist ORDER BY b <^> B'1111' LIMIT 5;
-- the five rows nearest to 1111: row 15 (1111) at 0, then rows 7 (0111),
-- 11 (1011), 13 (1101) and 14 (1110) at 1, listed by id
SELECT id, b, dist
  FROM (SELECT id, b, b <^> B'1111' AS dist FROM coexist ORDER BY b <^> B'1111' LIMIT 5) s
  ORDER BY dist, id;
EXPLAIN (COSTS OFF) SELECT id FROM coexist ORDER BY r <-> '{7.1,2.2}' LIMIT 1;
-- row 7 is (7, 2), the nearest to (7.1, 2.2)
SELECT id FROM coexist ORDER BY r <-> '{7.1,2.2}' LIMIT 1;
-- ORDER BY v <-> vector uses the stand-in operator (one NOTICE per row; no hannoy index)
SELECT id FROM coexist WHERE id <= 2 ORDER BY v <-> ROW('{1,1}')::vector;
RESET hannoy.ef_search;
RESET enable_seqscan;
DROP TABLE coexist;

--
-- Dropping hannoy leaves every stand-in in place, and installing it again
-- still works
--
DROP EXTENSION hannoy;
SELECT count(*) AS operators FROM pg_operator WHERE oprnamespace = 'public'::regnamespace;
SELECT count(*) AS functions FROM pg_proc WHERE pronamespace = 'public'::regnamespace;
SELECT B'1010' <~> B'0110' AS two;
CREATE EXTENSION hannoy;
SELECT B'1010' <^> B'0110' AS two;

--
-- Clean up: the stand-ins go, hannoy keeps working, then the database goes
--
DROP OPERATOR CLASS bit_hamming_ops USING hnsw;
DROP OPERATOR CLASS bit_hamming_ops USING ivfflat;
DROP ACCESS METHOD hnsw;
DROP ACCESS METHOD ivfflat;
-- (terse: only the number of objects dropped along)
\set VERBOSITY terse
DROP TYPE vector, halfvec, sparsevec CASCADE;
DROP FUNCTION hamming_distance(bit, bit), jaccard_distance(bit, bit) CASCADE;
\set VERBOSITY default
SELECT '{1,2}'::real[] <-> '{4,6}'::real[] AS five, B'1010' <^> B'0110' AS two;
SELECT count(*) AS stand_in_operators_left
  FROM pg_operator WHERE oprname IN ('<~>', '<%>') OR oprleft IN (SELECT oid FROM pg_type WHERE typname IN ('vector', 'halfvec', 'sparsevec'));
\c :home_database
DROP DATABASE hannoy_coexist;
