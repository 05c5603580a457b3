/* hannoy 0.1.0: an HNSW index access method on LMDB with CRoaring edges */

-- Every built-in type and operator class is schema-qualified, and every
-- object of the extension is named through @extschema@, so a hostile
-- search_path cannot substitute its own objects while this script runs.

\echo Use "CREATE EXTENSION hannoy" to load this file. \quit

-- Refuse to install unless the library is preloaded (its transaction hooks
-- must run in every backend).
CREATE FUNCTION @extschema@.hannoy_check_preloaded() RETURNS pg_catalog.void
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
SELECT @extschema@.hannoy_check_preloaded();

-- Distance functions.  Names carry the hannoy_ prefix so they never collide
-- with pgvector's (l2_distance, cosine_distance, inner_product, l1_distance,
-- hamming_distance, jaccard_distance) in the same schema.
CREATE FUNCTION @extschema@.hannoy_l2_distance(pg_catalog.float4[], pg_catalog.float4[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'hannoy_real_l2_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.hannoy_cosine_distance(pg_catalog.float4[], pg_catalog.float4[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'hannoy_real_cosine_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.hannoy_negative_inner_product(pg_catalog.float4[], pg_catalog.float4[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'hannoy_real_negative_inner_product'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.hannoy_l1_distance(pg_catalog.float4[], pg_catalog.float4[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'hannoy_real_l1_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.hannoy_hamming_distance(pg_catalog.bit, pg_catalog.bit) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'hannoy_bit_hamming_distance'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.hannoy_simd() RETURNS pg_catalog.text
	AS 'MODULE_PATHNAME', 'hannoy_simd'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Operators
CREATE OPERATOR @extschema@.<-> (
	LEFTARG = pg_catalog.float4[], RIGHTARG = pg_catalog.float4[], FUNCTION = @extschema@.hannoy_l2_distance,
	COMMUTATOR = '<->'
);

CREATE OPERATOR @extschema@.<=> (
	LEFTARG = pg_catalog.float4[], RIGHTARG = pg_catalog.float4[], FUNCTION = @extschema@.hannoy_cosine_distance,
	COMMUTATOR = '<=>'
);

CREATE OPERATOR @extschema@.<#> (
	LEFTARG = pg_catalog.float4[], RIGHTARG = pg_catalog.float4[], FUNCTION = @extschema@.hannoy_negative_inner_product,
	COMMUTATOR = '<#>'
);

CREATE OPERATOR @extschema@.<+> (
	LEFTARG = pg_catalog.float4[], RIGHTARG = pg_catalog.float4[], FUNCTION = @extschema@.hannoy_l1_distance,
	COMMUTATOR = '<+>'
);

CREATE OPERATOR @extschema@.<^> (
	LEFTARG = pg_catalog.bit, RIGHTARG = pg_catalog.bit, FUNCTION = @extschema@.hannoy_hamming_distance,
	COMMUTATOR = '<^>'
);

-- Access method
CREATE FUNCTION @extschema@.hannoyhandler(pg_catalog.internal) RETURNS pg_catalog.index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD hannoy TYPE INDEX HANDLER @extschema@.hannoyhandler;

COMMENT ON ACCESS METHOD hannoy IS 'HNSW vector index on LMDB with CRoaring edges';

-- Operator classes: the strategy number names the metric.
CREATE OPERATOR CLASS @extschema@.real_l2_ops
	DEFAULT FOR TYPE pg_catalog.float4[] USING hannoy AS
	OPERATOR 1 @extschema@.<-> (pg_catalog.float4[], pg_catalog.float4[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_l2_distance(pg_catalog.float4[], pg_catalog.float4[]);

CREATE OPERATOR CLASS @extschema@.real_cosine_ops
	FOR TYPE pg_catalog.float4[] USING hannoy AS
	OPERATOR 2 @extschema@.<=> (pg_catalog.float4[], pg_catalog.float4[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_cosine_distance(pg_catalog.float4[], pg_catalog.float4[]);

CREATE OPERATOR CLASS @extschema@.real_ip_ops
	FOR TYPE pg_catalog.float4[] USING hannoy AS
	OPERATOR 3 @extschema@.<#> (pg_catalog.float4[], pg_catalog.float4[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_negative_inner_product(pg_catalog.float4[], pg_catalog.float4[]);

CREATE OPERATOR CLASS @extschema@.real_l1_ops
	FOR TYPE pg_catalog.float4[] USING hannoy AS
	OPERATOR 4 @extschema@.<+> (pg_catalog.float4[], pg_catalog.float4[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_l1_distance(pg_catalog.float4[], pg_catalog.float4[]);

CREATE OPERATOR CLASS @extschema@.bit_hamming_ops
	DEFAULT FOR TYPE pg_catalog.bit USING hannoy AS
	OPERATOR 5 @extschema@.<^> (pg_catalog.bit, pg_catalog.bit) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.hannoy_hamming_distance(pg_catalog.bit, pg_catalog.bit);

-- Removes sidecars that no index owns (superuser only); returns how many.
CREATE FUNCTION @extschema@.hannoy_sweep() RETURNS pg_catalog.int4
	AS 'MODULE_PATHNAME', 'hannoy_sweep'
	LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION @extschema@.hannoy_sweep() FROM PUBLIC;

-- The check function is only needed while installing.
DROP FUNCTION @extschema@.hannoy_check_preloaded();

-- Inspection.  Only the index's owner or a superuser may call these.
CREATE FUNCTION @extschema@.hannoy_index_size(index pg_catalog.regclass) RETURNS pg_catalog.int8
	AS 'MODULE_PATHNAME', 'hannoy_index_size'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.hannoy_index_size(pg_catalog.regclass) IS
	'bytes of the sidecar of a hannoy index (pg_relation_size counts only its metapage)';

CREATE FUNCTION @extschema@.hannoy_index_stats(index pg_catalog.regclass,
	OUT live_items pg_catalog.int8, OUT unindexed_rows pg_catalog.int8, OUT tombstones pg_catalog.int8,
	OUT free_ids pg_catalog.int8, OUT next_id pg_catalog.int8, OUT layers pg_catalog.int4, OUT entry_point pg_catalog.int8,
	OUT edges_per_layer pg_catalog.int8[], OUT mean_degree_layer0 pg_catalog.float8,
	OUT sidecar_bytes pg_catalog.int8, OUT lmdb_pages pg_catalog.int8,
	OUT codes pg_catalog.int8, OUT code_bytes pg_catalog.int4,
	OUT quantizer pg_catalog.text, OUT quantizer_bytes pg_catalog.int8,
	OUT bytes_per_vector pg_catalog.float8, OUT staged_rows pg_catalog.int8,
	OUT rerank pg_catalog.text)
	AS 'MODULE_PATHNAME', 'hannoy_index_stats'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.hannoy_index_stats(pg_catalog.regclass) IS
	'counters and graph shape of a hannoy index';

CREATE FUNCTION @extschema@.hannoy_index_space(index pg_catalog.regclass,
	OUT part pg_catalog.text, OUT entries pg_catalog.int8, OUT pages pg_catalog.int8,
	OUT bytes pg_catalog.int8)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'hannoy_index_space'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE ROWS 16;

COMMENT ON FUNCTION @extschema@.hannoy_index_space(pg_catalog.regclass) IS
	'the parts of a hannoy index''s sidecar bytes: its databases and LMDB''s own pages';

CREATE FUNCTION @extschema@.hannoy_verify(index pg_catalog.regclass,
	OUT kind pg_catalog.text, OUT item pg_catalog.int8, OUT detail pg_catalog.text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'hannoy_verify'
	LANGUAGE C VOLATILE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION @extschema@.hannoy_verify(pg_catalog.regclass) IS
	'checks a hannoy index: one row per problem, none when it is healthy';
