-- rerank_heap: the index option "rerank" (sidecar, heap), its errors, and
-- what an index without vectors (storage format 7) does: its size, stats,
-- verify, scans re-ranked from the heap, inserts, DELETE and VACUUM, an
-- expression index.  Recall against a sequential scan on real data:
-- test/t/245_rerank_heap.pl.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

-- 500 rows of 300 dimensions: deterministic, unevenly scaled, off the origin
CREATE TABLE rh_t (id int PRIMARY KEY, v real[]);
INSERT INTO rh_t
  SELECT i, array_agg((3 + sin(i * 0.37 + d * 1.3) * (1 + d % 5) + cos(i * d * 0.011))::real ORDER BY d)
  FROM generate_series(1, 500) i, generate_series(1, 300) d GROUP BY i;
INSERT INTO rh_t VALUES (501, NULL), (502, NULL);

--
-- Bad values, and heap re-ranking without codes
--
CREATE INDEX rh_bad ON rh_t USING hannoy (v) WITH (rerank = 'table');
CREATE INDEX rh_bad ON rh_t USING hannoy (v) WITH (rerank = 'heap');
CREATE INDEX rh_bad ON rh_t USING hannoy (v) WITH (rerank = 'heap', quantizer = 'auto');
CREATE INDEX rh_bad ON rh_t USING hannoy (v) WITH (rerank = 'heap', quantizer = 'none');
CREATE TABLE rh_bits (id int, b bit(64));
INSERT INTO rh_bits SELECT i, (i * 2654435761)::bigint::bit(64) FROM generate_series(1, 50) i;
CREATE INDEX rh_bad ON rh_bits USING hannoy (b bit_hamming_ops) WITH (rerank = 'heap', quantizer = 'binary');
DROP TABLE rh_bits;
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'rh_t'::regclass;

--
-- Both quantizers, both ways: the heap variants keep no vectors
--
CREATE INDEX rh_bin_side ON rh_t USING hannoy (v) WITH (quantizer = 'binary');
CREATE INDEX rh_bin_heap ON rh_t USING hannoy (v) WITH (quantizer = 'binary', rerank = 'heap');
CREATE INDEX rh_s8_side ON rh_t USING hannoy (v) WITH (quantizer = 'scalar8', rerank = 'sidecar');
CREATE INDEX rh_s8_heap ON rh_t USING hannoy (v) WITH (quantizer = 'scalar8', rerank = 'heap');
SELECT i AS index, live_items, unindexed_rows, quantizer, codes, code_bytes, rerank
FROM unnest(ARRAY['rh_bin_side', 'rh_bin_heap', 'rh_s8_side', 'rh_s8_heap']) i,
     hannoy_index_stats(i::regclass);
-- 500 vectors of 1,200 bytes are gone: each heap variant is far smaller
SELECT (SELECT sidecar_bytes FROM hannoy_index_stats('rh_bin_heap')) * 3 <
       (SELECT sidecar_bytes FROM hannoy_index_stats('rh_bin_side')) AS bin_smaller,
       (SELECT sidecar_bytes FROM hannoy_index_stats('rh_s8_heap')) * 3 / 2 <
       (SELECT sidecar_bytes FROM hannoy_index_stats('rh_s8_side')) AS s8_smaller;
-- hannoy_index_space: the vectors database is empty in the heap variants, the codes hold one per row
SELECT i AS index, s.part, s.entries
FROM unnest(ARRAY['rh_bin_side', 'rh_bin_heap', 'rh_s8_side', 'rh_s8_heap']) i,
     hannoy_index_space(i::regclass) s
WHERE s.part IN ('vectors', 'codes') ORDER BY 1, 2;
SELECT count(*) AS problems FROM hannoy_verify('rh_bin_heap');
SELECT count(*) AS problems FROM hannoy_verify('rh_s8_heap');

--
-- Scans: exact distances from the heap, the first window in exact order,
-- every row returned, NULL rows last
--
CREATE FUNCTION rh_window_ok(k int) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  got int[];
  q real[];
BEGIN
  FOR qid IN 1..500 BY 7 LOOP
    SELECT v INTO q FROM rh_t WHERE id = qid;
    CONTINUE WHEN NOT FOUND; -- deleted
    SET LOCAL enable_seqscan = off;
    -- the distances the index returns must be the operator's, in order
    IF EXISTS (SELECT 1 FROM (SELECT id, d, v <-> q AS exact, lag(d) OVER () AS prev
                              FROM (SELECT id, v, v <-> q AS d FROM rh_t
                                    ORDER BY v <-> q LIMIT k) s) t
               WHERE d <> exact OR d < prev) THEN
      RAISE NOTICE 'query %: a distance is not exact or out of order', qid;
      RETURN false;
    END IF;
    SELECT array_agg(id ORDER BY n) INTO got
      FROM (SELECT id, row_number() OVER () AS n FROM (SELECT id FROM rh_t ORDER BY v <-> q LIMIT 1) s) t;
    IF got[1] <> qid THEN
      RAISE NOTICE 'query %: first row %', qid, got[1];
      RETURN false;
    END IF;
  END LOOP;
  RETURN true;
END $$;

BEGIN;
DROP INDEX rh_bin_side, rh_s8_side, rh_s8_heap;
SET LOCAL hannoy.ef_search = 40;
SELECT rh_window_ok(10) AS bin_ok;
SET LOCAL hannoy.rerank_window = 5;
SELECT rh_window_ok(5) AS bin_ok_window5;
SET LOCAL enable_seqscan = off;
SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE v IS NULL) AS nulls,
       bool_and(ord > 500) FILTER (WHERE v IS NULL) AS nulls_last
FROM (SELECT id, v, row_number() OVER () AS ord
      FROM (SELECT id, v FROM rh_t ORDER BY v <-> (SELECT v FROM rh_t WHERE id = 3)) s) t;
-- a filter that rejects most rows still finds its 5
SELECT count(*) FROM (SELECT id FROM rh_t WHERE id % 50 = 0
                      ORDER BY v <-> (SELECT v FROM rh_t WHERE id = 3) LIMIT 5) s;
ROLLBACK;

BEGIN;
DROP INDEX rh_bin_side, rh_s8_side, rh_bin_heap;
SET LOCAL hannoy.ef_search = 40;
SELECT rh_window_ok(10) AS s8_ok;
ROLLBACK;

--
-- Inserts, DELETE and VACUUM on the heap variants: still no vectors,
-- verify clean, scans exact
--
DROP INDEX rh_bin_side, rh_s8_side;
INSERT INTO rh_t
  SELECT i, array_agg((3 + sin(i * 0.37 + d * 1.3) * (1 + d % 5) + cos(i * d * 0.011))::real ORDER BY d)
  FROM generate_series(503, 700) i, generate_series(1, 300) d GROUP BY i;
DELETE FROM rh_t WHERE id % 3 = 0;
VACUUM rh_t;
SELECT i AS index, live_items, tombstones, codes, rerank
FROM unnest(ARRAY['rh_bin_heap', 'rh_s8_heap']) i, hannoy_index_stats(i::regclass);
SELECT count(*) AS problems FROM hannoy_verify('rh_bin_heap');
SELECT count(*) AS problems FROM hannoy_verify('rh_s8_heap');
BEGIN;
DROP INDEX rh_s8_heap;
SET LOCAL hannoy.ef_search = 40;
SELECT rh_window_ok(10) AS bin_ok_after_vacuum;
ROLLBACK;

--
-- An expression index: the key is formed from the heap tuple as an insert forms it
--
CREATE FUNCTION rh_half(real[]) RETURNS real[] IMMUTABLE LANGUAGE sql
  AS $$ SELECT array_agg(x / 2 ORDER BY n) FROM unnest($1) WITH ORDINALITY u(x, n) $$;
CREATE INDEX rh_expr ON rh_t USING hannoy (rh_half(v))
  WITH (quantizer = 'scalar8', rerank = 'heap');
SELECT count(*) AS problems FROM hannoy_verify('rh_expr');
BEGIN;
DROP INDEX rh_bin_heap, rh_s8_heap;
SET LOCAL enable_seqscan = off;
SET LOCAL hannoy.ef_search = 40;
SELECT id, rh_half(v) <-> rh_half((SELECT v FROM rh_t WHERE id = 10)) =
           (v <-> (SELECT v FROM rh_t WHERE id = 10)) / 2 AS halved
FROM rh_t ORDER BY rh_half(v) <-> rh_half((SELECT v FROM rh_t WHERE id = 10)) LIMIT 3;
-- every row, over many windows (each forms keys again)
SELECT count(*), count(DISTINCT id) FROM
  (SELECT id FROM rh_t ORDER BY rh_half(v) <-> rh_half((SELECT v FROM rh_t WHERE id = 10))) s;
ROLLBACK;

--
-- ALTER INDEX SET: the next REINDEX builds what the options say
--
ALTER INDEX rh_bin_heap SET (rerank = 'sidecar');
SELECT rerank FROM hannoy_index_stats('rh_bin_heap');
REINDEX INDEX rh_bin_heap;
SELECT rerank FROM hannoy_index_stats('rh_bin_heap');
-- options that do not fit are refused when set, not at the next REINDEX
ALTER INDEX rh_bin_heap SET (rerank = 'heap', quantizer = 'none');
ALTER INDEX rh_bin_heap RESET (quantizer);
ALTER INDEX rh_bin_heap SET (rerank = 'heap');

DROP FUNCTION rh_window_ok(int);
DROP TABLE rh_t;
DROP FUNCTION rh_half(real[]);
