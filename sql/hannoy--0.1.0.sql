/* hannoy 0.1.0: an HNSW index access method on LMDB with CRoaring edges */

\echo Use "CREATE EXTENSION hannoy" to load this file. \quit

-- Refuse to install unless the library is preloaded (its transaction hooks
-- must run in every backend).
CREATE FUNCTION hannoy_check_preloaded() RETURNS void
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
SELECT @extschema@.hannoy_check_preloaded();

-- Distance functions.  Names carry the hannoy_ prefix so they never collide
-- with pgvector's (l2_distance, cosine_distance, inner_product, l1_distance,
-- hamming_distance, jaccard_distance) in the same schema.
CREATE FUNCTION hannoy_l2_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'hannoy_real_l2_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION hannoy_cosine_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'hannoy_real_cosine_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION hannoy_negative_inner_product(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'hannoy_real_negative_inner_product'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION hannoy_l1_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'hannoy_real_l1_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION hannoy_hamming_distance(bit, bit) RETURNS float8
	AS 'MODULE_PATHNAME', 'hannoy_bit_hamming_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION hannoy_simd() RETURNS text
	AS 'MODULE_PATHNAME', 'hannoy_simd'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Operators
CREATE OPERATOR <-> (
	LEFTARG = real[], RIGHTARG = real[], FUNCTION = @extschema@.hannoy_l2_distance,
	COMMUTATOR = '<->'
);

CREATE OPERATOR <=> (
	LEFTARG = real[], RIGHTARG = real[], FUNCTION = @extschema@.hannoy_cosine_distance,
	COMMUTATOR = '<=>'
);

CREATE OPERATOR <#> (
	LEFTARG = real[], RIGHTARG = real[], FUNCTION = @extschema@.hannoy_negative_inner_product,
	COMMUTATOR = '<#>'
);

CREATE OPERATOR <+> (
	LEFTARG = real[], RIGHTARG = real[], FUNCTION = @extschema@.hannoy_l1_distance,
	COMMUTATOR = '<+>'
);

CREATE OPERATOR <^> (
	LEFTARG = bit, RIGHTARG = bit, FUNCTION = @extschema@.hannoy_hamming_distance,
	COMMUTATOR = '<^>'
);

-- Access method
CREATE FUNCTION hannoyhandler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD hannoy TYPE INDEX HANDLER @extschema@.hannoyhandler;

COMMENT ON ACCESS METHOD hannoy IS 'HNSW vector index on LMDB with CRoaring edges';

-- Operator classes: the strategy number names the metric.
CREATE OPERATOR CLASS real_l2_ops
	DEFAULT FOR TYPE real[] USING hannoy AS
	OPERATOR 1 @extschema@.<-> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_l2_distance(real[], real[]);

CREATE OPERATOR CLASS real_cosine_ops
	FOR TYPE real[] USING hannoy AS
	OPERATOR 2 @extschema@.<=> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_cosine_distance(real[], real[]);

CREATE OPERATOR CLASS real_ip_ops
	FOR TYPE real[] USING hannoy AS
	OPERATOR 3 @extschema@.<#> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_negative_inner_product(real[], real[]);

CREATE OPERATOR CLASS real_l1_ops
	FOR TYPE real[] USING hannoy AS
	OPERATOR 4 @extschema@.<+> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_l1_distance(real[], real[]);

CREATE OPERATOR CLASS bit_hamming_ops
	DEFAULT FOR TYPE bit USING hannoy AS
	OPERATOR 5 @extschema@.<^> (bit, bit) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_hamming_distance(bit, bit);

-- Removes sidecars that no index owns (superuser only); returns how many.
CREATE FUNCTION hannoy_sweep() RETURNS integer
	AS 'MODULE_PATHNAME', 'hannoy_sweep'
	LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION hannoy_sweep() FROM PUBLIC;

-- The check function is only needed while installing.
DROP FUNCTION @extschema@.hannoy_check_preloaded();
