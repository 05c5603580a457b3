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

-- Inspection.  Only the index's owner or a superuser may call these.
CREATE FUNCTION hannoy_index_size(index regclass) RETURNS bigint
	AS 'MODULE_PATHNAME', 'hannoy_index_size'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION hannoy_index_size(regclass) IS
	'bytes of the sidecar of a hannoy index (pg_relation_size counts only its metapage)';

CREATE FUNCTION hannoy_index_stats(index regclass,
	OUT live_items bigint, OUT unindexed_rows bigint, OUT tombstones bigint,
	OUT free_ids bigint, OUT next_id bigint, OUT layers integer, OUT entry_point bigint,
	OUT edges_per_layer bigint[], OUT mean_degree_layer0 float8,
	OUT sidecar_bytes bigint, OUT lmdb_pages bigint)
	AS 'MODULE_PATHNAME', 'hannoy_index_stats'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION hannoy_index_stats(regclass) IS
	'counters and graph shape of a hannoy index';

CREATE FUNCTION hannoy_verify(index regclass,
	OUT kind text, OUT item bigint, OUT detail text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'hannoy_verify'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION hannoy_verify(regclass) IS
	'checks a hannoy index: one row per problem, none when it is healthy';
