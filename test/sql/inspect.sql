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
-- hannoy_index_space: the parts of the sidecar's bytes; they add up to
-- hannoy_index_size and their pages to the pages LMDB uses
--
SELECT part, entries FROM hannoy_index_space('inspect_idx')
WHERE part IN ('meta', 'vectors', 'tids', 'items', 'unindexed', 'deleted', 'free', 'lmdb meta pages')
ORDER BY part;
SELECT sum(bytes) = hannoy_index_size('inspect_idx') AS bytes_add_up,
       sum(pages) = (SELECT lmdb_pages FROM hannoy_index_stats('inspect_idx')) AS pages_add_up,
       count(*) FILTER (WHERE part = 'lmdb unaccounted') AS unaccounted
FROM hannoy_index_space('inspect_idx');

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
-- VACUUM freed ids and pages: the parts still add up, the freed ids are listed
SELECT sum(bytes) = hannoy_index_size('inspect_idx') AS bytes_add_up,
       sum(pages) = (SELECT lmdb_pages FROM hannoy_index_stats('inspect_idx')) AS pages_add_up,
       (SELECT entries FROM hannoy_index_space('inspect_idx') WHERE part = 'free') =
       (SELECT free_ids FROM hannoy_index_stats('inspect_idx')) AS free_ids_listed
FROM hannoy_index_space('inspect_idx');

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
-- hannoy_verify compares the sidecar with the heap: each stored vector is
-- the index key of the heap tuple at its TID, bit for bit (NULL and, under
-- cosine, zero vectors are stored as such), and each live row is in the
-- sidecar.  HOT updates (the entry stays at the chain's root), updates
-- that move a row, deleted rows VACUUM has not reached, rows of rolled-back
-- transactions and TOASTed vectors all verify clean.
--
CREATE TABLE inspect_heap (id int, v real[], note text) WITH (fillfactor = 50);
INSERT INTO inspect_heap
  SELECT i, ARRAY[i % 7, i % 5, i % 3]::real[], 'x' FROM generate_series(1, 300) i;
INSERT INTO inspect_heap VALUES (301, NULL, 'x'), (302, '{0,0,0}', 'x'), (303, '{-0,0,0}', 'x');
INSERT INTO inspect_heap
  SELECT 400 + i, (SELECT array_agg((i * j % 11)::real) FROM generate_series(1, 3) j), 'x'
  FROM generate_series(1, 5) i;
CREATE INDEX inspect_heap_cos ON inspect_heap USING hannoy (v real_cosine_ops);
UPDATE inspect_heap SET note = 'hot' WHERE id <= 100;
UPDATE inspect_heap SET v = ARRAY[9, 9, id]::real[] WHERE id BETWEEN 101 AND 120;
DELETE FROM inspect_heap WHERE id BETWEEN 121 AND 140;
BEGIN;
INSERT INTO inspect_heap SELECT i, '{1,2,3}', 'x' FROM generate_series(1001, 1010) i;
SELECT count(*) AS problems FROM hannoy_verify('inspect_heap_cos');
ROLLBACK;
SELECT * FROM hannoy_verify('inspect_heap_cos');
VACUUM inspect_heap;
SELECT * FROM hannoy_verify('inspect_heap_cos');
-- long vectors live in the TOAST table
CREATE TABLE inspect_toast (id int, v real[]);
INSERT INTO inspect_toast
  SELECT i, (SELECT array_agg(((i * j) % 97)::real) FROM generate_series(1, 3000) j)
  FROM generate_series(1, 10) i;
CREATE INDEX inspect_toast_idx ON inspect_toast USING hannoy (v);
UPDATE inspect_toast SET id = -id WHERE id <= 3;
SELECT * FROM hannoy_verify('inspect_toast_idx');

-- An IMMUTABLE function that is not (its result follows a setting) makes
-- an expression index disagree with its heap, the way a changed collation
-- or a replaced function would: every row whose key changed is reported.
CREATE FUNCTION inspect_scaled(v real[]) RETURNS real[] LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT ARRAY(SELECT x * current_setting('inspect.scale')::real
                       FROM unnest(v) WITH ORDINALITY u(x, n) ORDER BY n) $$;
CREATE TABLE inspect_expr (id int, v real[]);
INSERT INTO inspect_expr VALUES (1, '{1,2}'), (2, '{0,0}'), (3, NULL), (4, '{0.5,-3}');
SET inspect.scale = 1;
CREATE INDEX inspect_expr_idx ON inspect_expr USING hannoy (inspect_scaled(v) real_l1_ops);
SELECT * FROM hannoy_verify('inspect_expr_idx');
SET inspect.scale = 2;
SELECT kind, item, detail FROM hannoy_verify('inspect_expr_idx') ORDER BY detail;
-- a vector whose length changed is reported as such; row 1, updated in
-- place (a HOT update), is found through its chain's root (0,1)
SET inspect.scale = 1;
UPDATE inspect_expr SET v = '{1,2}' WHERE id = 1;
CREATE OR REPLACE FUNCTION inspect_scaled(v real[]) RETURNS real[] LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT v || current_setting('inspect.scale')::real $$;
SELECT kind, item, detail FROM hannoy_verify('inspect_expr_idx') ORDER BY detail;
-- bit strings: the first differing bit is named
CREATE FUNCTION inspect_masked(b bit) RETURNS bit LANGUAGE sql IMMUTABLE
  AS $$ SELECT b # current_setting('inspect.mask')::bit(8) $$;
CREATE TABLE inspect_bitexpr (id int, b bit(8));
INSERT INTO inspect_bitexpr VALUES (1, B'10101010'), (2, B'00001111');
SET inspect.mask = '00000000';
CREATE INDEX inspect_bitexpr_idx ON inspect_bitexpr USING hannoy (inspect_masked(b));
SELECT * FROM hannoy_verify('inspect_bitexpr_idx');
SET inspect.mask = '00100000';
SELECT kind, item, detail FROM hannoy_verify('inspect_bitexpr_idx') ORDER BY detail;
-- a partial index whose predicate changed its mind lacks the rows it now
-- covers
CREATE FUNCTION inspect_covered(id int) RETURNS bool LANGUAGE sql IMMUTABLE
  AS $$ SELECT id <= current_setting('inspect.upto')::int $$;
SET inspect.upto = 2;
CREATE INDEX inspect_expr_part ON inspect_expr USING hannoy (v) WHERE inspect_covered(id);
SELECT * FROM hannoy_verify('inspect_expr_part');
SET inspect.upto = 4;
SELECT kind, item, detail FROM hannoy_verify('inspect_expr_part') ORDER BY detail;
RESET inspect.scale;
RESET inspect.mask;
RESET inspect.upto;
DROP TABLE inspect_heap, inspect_toast, inspect_expr, inspect_bitexpr;
DROP FUNCTION inspect_scaled(real[]), inspect_masked(bit), inspect_covered(int);

--
-- only hannoy indexes
--
SELECT hannoy_index_size('inspect_t_pkey');
SELECT * FROM hannoy_index_stats('inspect_t');
SELECT * FROM hannoy_index_space('inspect_t_pkey');
SELECT * FROM hannoy_verify('inspect_t_pkey');
SELECT * FROM hannoy_verify('pg_class');
-- a partitioned index has no sidecar; its partitions' indexes do
CREATE TABLE inspect_parts (id int, v real[]) PARTITION BY RANGE (id);
CREATE TABLE inspect_parts_1 PARTITION OF inspect_parts FOR VALUES FROM (0) TO (100);
INSERT INTO inspect_parts VALUES (1, '{1,2}'), (2, '{3,4}');
CREATE INDEX inspect_parts_idx ON inspect_parts USING hannoy (v);
SELECT * FROM hannoy_verify('inspect_parts_idx');
SELECT live_items FROM hannoy_index_stats('inspect_parts_1_v_idx');
SELECT count(*) FROM hannoy_index_space('inspect_parts_idx');
SELECT * FROM hannoy_verify('inspect_parts_1_v_idx');
-- NULL in, NULL out (the functions are strict)
SELECT hannoy_index_size(NULL);
SELECT count(*) FROM hannoy_verify(NULL);
SELECT count(*) FROM hannoy_index_space(NULL);

--
-- only the owner or a superuser
--
CREATE ROLE regress_hannoy_inspector;
GRANT SELECT ON inspect_t TO regress_hannoy_inspector;
SET ROLE regress_hannoy_inspector;
SELECT hannoy_index_size('inspect_idx');
SELECT * FROM hannoy_index_stats('inspect_idx');
SELECT * FROM hannoy_index_space('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');
RESET ROLE;
-- the owner need not be a superuser
ALTER TABLE inspect_t OWNER TO regress_hannoy_inspector;
SET ROLE regress_hannoy_inspector;
SELECT live_items FROM hannoy_index_stats('inspect_idx');
SELECT count(*) > 0 AS has_parts FROM hannoy_index_space('inspect_idx');
SELECT * FROM hannoy_verify('inspect_idx');
RESET ROLE;

--
-- function properties
--
SELECT proname, provolatile, proparallel, proisstrict, proretset
FROM pg_proc
WHERE proname IN ('hannoy_index_size', 'hannoy_index_stats', 'hannoy_index_space', 'hannoy_verify')
ORDER BY proname;

DROP TABLE inspect_t, inspect_empty, inspect_bits, inspect_parts;
DROP ROLE regress_hannoy_inspector;
