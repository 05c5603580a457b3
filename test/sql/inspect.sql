-- inspect: hannoy_index_size, hannoy_index_stats and hannoy_verify.
--
-- Counts that follow from the data (items, unindexed rows, tombstones, next
-- id) are shown as they are; what depends on the random levels of the graph
-- (layers, entry point, edges, degree) is shown only through checks that
-- hold whatever the levels are.  A healthy index verifies with no rows.
-- Only the owner (or a superuser) may inspect an index, and only a hannoy
-- index.
-- (quietly: an earlier test file may have installed it already)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

CREATE TABLE inspect_t (id int PRIMARY KEY, v real[]);
INSERT INTO inspect_t
  SELECT i, ARRAY[i % 17, i / 17, (i * 7) % 11]::real[] FROM generate_series(1, 500) i;
INSERT INTO inspect_t VALUES (501, NULL), (502, NULL);
CREATE INDEX inspect_idx ON inspect_t USING hannoy (v) WITH (m = 8);

--
-- hannoy_index_size: the sidecar's bytes, which pg_relation_size (the
-- metapage only) does not count
--
SELECT hannoy_index_size('inspect_idx') > 0 AS has_sidecar_bytes,
       pg_relation_size('inspect_idx') AS metapage_bytes;

--
-- hannoy_index_stats: 500 vectors, 2 NULL rows, nothing deleted yet
--
SELECT live_items, unindexed_rows, tombstones, free_ids, next_id FROM hannoy_index_stats('inspect_idx');
SELECT layers >= 1 AS has_layers,
       entry_point >= 0 AND entry_point < next_id AS entry_point_is_an_item,
       cardinality(edges_per_layer) = layers AS one_count_per_layer,
       edges_per_layer[1] BETWEEN live_items AND live_items * 16 AS layer0_within_m0,
       mean_degree_layer0 BETWEEN 1 AND 16 AS mean_degree_within_m0,
       sidecar_bytes = hannoy_index_size('inspect_idx') AS same_bytes_as_size,
       lmdb_pages > 1 AS has_pages
FROM hannoy_index_stats('inspect_idx');

--
-- hannoy_verify: a healthy index has no problems
--
SELECT * FROM hannoy_verify('inspect_idx');

--
-- inserts, deletes and VACUUM: VACUUM repairs the graph around removed
-- rows and frees their ids (free_ids), the graph stays healthy
--
INSERT INTO inspect_t
  SELECT i, ARRAY[i % 13, i / 13, 1]::real[] FROM generate_series(503, 600) i;
DELETE FROM inspect_t WHERE id % 5 = 0;
VACUUM inspect_t;
SELECT live_items, unindexed_rows, tombstones, free_ids, next_id FROM hannoy_index_stats('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');

-- this backend's queued rows are applied before it inspects, as before a
-- scan; a new row reuses a freed id (next_id does not move); rows of a
-- transaction that rolls back stay until VACUUM removes them
BEGIN;
INSERT INTO inspect_t VALUES (1001, '{1,2,3}'), (1002, NULL);
SELECT live_items, unindexed_rows, tombstones, next_id FROM hannoy_index_stats('inspect_idx');
ROLLBACK;
SELECT live_items, unindexed_rows, tombstones, next_id FROM hannoy_index_stats('inspect_idx');
VACUUM inspect_t;
SELECT live_items, unindexed_rows, tombstones, next_id FROM hannoy_index_stats('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');

--
-- an index built on an empty table: a sidecar with no graph
--
CREATE TABLE inspect_empty (id int, v real[]);
CREATE INDEX inspect_empty_idx ON inspect_empty USING hannoy (v real_cosine_ops);
SELECT live_items, unindexed_rows, tombstones, free_ids, next_id, layers, entry_point,
       edges_per_layer, mean_degree_layer0, sidecar_bytes > 0 AS has_sidecar_bytes,
       lmdb_pages > 0 AS has_pages
FROM hannoy_index_stats('inspect_empty_idx');
SELECT * FROM hannoy_verify('inspect_empty_idx');
-- zero vectors under cosine are unindexed rows, like NULLs; a graph of one
-- node has no edges on any of its layers
INSERT INTO inspect_empty VALUES (1, '{0,0}'), (2, '{1,0}'), (3, NULL);
SELECT live_items, unindexed_rows, tombstones, next_id, entry_point,
       layers >= 1 AS has_layers,
       (SELECT bool_and(e = 0) FROM unnest(edges_per_layer) e) AS no_edges,
       mean_degree_layer0
FROM hannoy_index_stats('inspect_empty_idx');
SELECT * FROM hannoy_verify('inspect_empty_idx');

-- bit strings under hamming
CREATE TABLE inspect_bits (id int, b bit(16));
INSERT INTO inspect_bits SELECT i, (i * 2654435761 % 65536)::bit(16) FROM generate_series(1, 200) i;
CREATE INDEX inspect_bits_idx ON inspect_bits USING hannoy (b);
SELECT live_items, unindexed_rows, next_id FROM hannoy_index_stats('inspect_bits_idx');
SELECT * FROM hannoy_verify('inspect_bits_idx');

--
-- only hannoy indexes
--
SELECT hannoy_index_size('inspect_t_pkey');
SELECT * FROM hannoy_index_stats('inspect_t');
SELECT * FROM hannoy_verify('inspect_t_pkey');
SELECT * FROM hannoy_verify('pg_class');
-- a partitioned index has no sidecar; its partitions' indexes do
CREATE TABLE inspect_parts (id int, v real[]) PARTITION BY RANGE (id);
CREATE TABLE inspect_parts_1 PARTITION OF inspect_parts FOR VALUES FROM (0) TO (100);
INSERT INTO inspect_parts VALUES (1, '{1,2}'), (2, '{3,4}');
CREATE INDEX inspect_parts_idx ON inspect_parts USING hannoy (v);
SELECT * FROM hannoy_verify('inspect_parts_idx');
SELECT live_items FROM hannoy_index_stats('inspect_parts_1_v_idx');
SELECT * FROM hannoy_verify('inspect_parts_1_v_idx');
-- NULL in, NULL out (the functions are strict)
SELECT hannoy_index_size(NULL);
SELECT count(*) FROM hannoy_verify(NULL);

--
-- only the owner or a superuser
--
CREATE ROLE regress_hannoy_inspector;
GRANT SELECT ON inspect_t TO regress_hannoy_inspector;
SET ROLE regress_hannoy_inspector;
SELECT hannoy_index_size('inspect_idx');
SELECT * FROM hannoy_index_stats('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');
RESET ROLE;
-- the owner need not be a superuser
ALTER TABLE inspect_t OWNER TO regress_hannoy_inspector;
SET ROLE regress_hannoy_inspector;
SELECT live_items FROM hannoy_index_stats('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');
RESET ROLE;

--
-- function properties
--
SELECT proname, provolatile, proparallel, proisstrict, proretset
FROM pg_proc
WHERE proname IN ('hannoy_index_size', 'hannoy_index_stats', 'hannoy_verify')
ORDER BY proname;

DROP TABLE inspect_t, inspect_empty, inspect_bits, inspect_parts;
DROP ROLE regress_hannoy_inspector;
