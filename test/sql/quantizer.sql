-- quantizer: the index option "quantizer" (auto, none, scalar8, binary),
-- its errors, what hannoy_index_stats and hannoy_verify say of each, and
-- hannoy.rerank_window.
--
-- Every index answers with exact distances, and the first window of a scan
-- on 1-bit codes comes in non-decreasing exact distance (recall against a
-- sequential scan: test/t/240_quantizer_recall.pl).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS hannoy;
RESET client_min_messages;

-- 600 rows of 300 dimensions: deterministic, unevenly scaled, off the origin
CREATE TABLE quant_t (id int PRIMARY KEY, v real[]);
INSERT INTO quant_t
  SELECT i, array_agg((3 + sin(i * 0.37 + d * 1.3) * (1 + d % 5) + cos(i * d * 0.011))::real ORDER BY d)
  FROM generate_series(1, 600) i, generate_series(1, 300) d GROUP BY i;
INSERT INTO quant_t VALUES (601, NULL);

--
-- Bad values and quantizers that do not fit the type
--
CREATE INDEX quant_bad ON quant_t USING hannoy (v) WITH (quantizer = 'pq');
CREATE INDEX quant_bad ON quant_t USING hannoy (v) WITH (quantizer = 1);
CREATE TABLE quant_bits (id int, b bit(64));
INSERT INTO quant_bits SELECT i, (i * 2654435761)::bigint::bit(64) FROM generate_series(1, 50) i;
CREATE INDEX quant_bad ON quant_bits USING hannoy (b bit_hamming_ops) WITH (quantizer = 'binary');
CREATE INDEX quant_bad ON quant_bits USING hannoy (b bit_hamming_ops) WITH (quantizer = 'scalar8');
-- none and auto fit every type: a bit index has no codes
CREATE INDEX quant_bits_none ON quant_bits USING hannoy (b bit_hamming_ops) WITH (quantizer = 'none');
CREATE INDEX quant_bits_auto ON quant_bits USING hannoy (b bit_hamming_ops) WITH (quantizer = 'auto');
SELECT quantizer, codes, code_bytes FROM hannoy_index_stats('quant_bits_none');
SELECT quantizer, codes, code_bytes FROM hannoy_index_stats('quant_bits_auto');
-- the failed statements left no index behind: only the two just built
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'quant_bits'::regclass;
DROP TABLE quant_bits;

--
-- Each quantizer on the same rows: code size, quantizer bytes, verify
--
CREATE INDEX quant_auto ON quant_t USING hannoy (v);
CREATE INDEX quant_none ON quant_t USING hannoy (v) WITH (quantizer = 'none');
CREATE INDEX quant_s8 ON quant_t USING hannoy (v) WITH (quantizer = 'scalar8');
CREATE INDEX quant_bin ON quant_t USING hannoy (v) WITH (quantizer = 'binary');
-- 300 dimensions: scalar8 is one byte each; binary rotates 512 bits (64 bytes) plus 12
SELECT i AS index, quantizer, codes, code_bytes, quantizer_bytes,
       bytes_per_vector > 0 AS has_bytes_per_vector
FROM unnest(ARRAY['quant_auto', 'quant_none', 'quant_s8', 'quant_bin']) i,
     hannoy_index_stats(i::regclass);
SELECT count(*) AS problems FROM hannoy_verify('quant_auto');
SELECT count(*) AS problems FROM hannoy_verify('quant_s8');
SELECT count(*) AS problems FROM hannoy_verify('quant_bin');
SELECT c.relname, c.reloptions FROM pg_class c WHERE relname LIKE 'quant\_%' AND relkind = 'i'
ORDER BY 1;

--
-- Scans on 1-bit codes: exact distances, the first window in exact order
--
CREATE FUNCTION quant_first_window_matches(k int) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  by_index int[];
  q real[];
BEGIN
  -- every fifth row as the query
  FOR qid IN 1..600 BY 5 LOOP
    SELECT v INTO q FROM quant_t WHERE id = qid;
    SET LOCAL enable_seqscan = off;
    SELECT array_agg(id) INTO by_index
      FROM (SELECT id FROM quant_t ORDER BY v <-> q LIMIT k) s;
    -- the query's own row first, and the rows in non-decreasing exact distance
    IF by_index[1] <> qid THEN
      RAISE NOTICE 'query %: first row %', qid, by_index[1];
      RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(by_index) WITH ORDINALITY a(id, n)
               JOIN unnest(by_index) WITH ORDINALITY b(id, n) ON b.n = a.n + 1
               WHERE (SELECT v FROM quant_t WHERE id = a.id) <-> q >
                     (SELECT v FROM quant_t WHERE id = b.id) <-> q) THEN
      RAISE NOTICE 'query %: out of order', qid;
      RETURN false;
    END IF;
  END LOOP;
  RETURN true;
END $$;

BEGIN;
DROP INDEX quant_auto, quant_none, quant_s8;
SET LOCAL hannoy.ef_search = 40;
SELECT quant_first_window_matches(10);
SET LOCAL hannoy.rerank_window = 100;
SELECT quant_first_window_matches(100);
SET LOCAL hannoy.rerank_window = 5;
SELECT quant_first_window_matches(5);
-- complete: every row, the NULL row last
SET LOCAL enable_seqscan = off;
SELECT count(*), count(*) FILTER (WHERE v IS NULL) AS nulls,
       (array_agg(id ORDER BY ord))[601] AS last
FROM (SELECT id, v, row_number() OVER () AS ord
      FROM (SELECT id, v FROM quant_t ORDER BY v <-> (SELECT v FROM quant_t WHERE id = 3)) s) t;
-- a row's exact distance to itself
SELECT id, v <-> (SELECT v FROM quant_t WHERE id = 77) AS dist
FROM quant_t ORDER BY v <-> (SELECT v FROM quant_t WHERE id = 77) LIMIT 1;
ROLLBACK;

--
-- hannoy.rerank_window: 0 to 65536
--
SET hannoy.rerank_window = -1;
SET hannoy.rerank_window = 65537;
SET hannoy.rerank_window = 65536;
RESET hannoy.rerank_window;
SHOW hannoy.rerank_window;

--
-- ALTER INDEX SET changes what the next REINDEX builds
--
ALTER INDEX quant_bin SET (quantizer = 'scalar8');
SELECT quantizer FROM hannoy_index_stats('quant_bin');
REINDEX INDEX quant_bin;
SELECT quantizer, code_bytes FROM hannoy_index_stats('quant_bin');
ALTER INDEX quant_bin RESET (quantizer);
REINDEX INDEX quant_bin;
SELECT quantizer, code_bytes FROM hannoy_index_stats('quant_bin');

--
-- A chosen quantizer gives codes below the automatic rule's 256
-- dimensions and 100 rows; an index built empty has none
--
CREATE TABLE quant_small (id int, v real[]);
INSERT INTO quant_small SELECT i, ARRAY[i, i % 7, 3]::real[] FROM generate_series(1, 20) i;
CREATE INDEX quant_small_bin ON quant_small USING hannoy (v real_l1_ops) WITH (quantizer = 'binary');
CREATE INDEX quant_small_auto ON quant_small USING hannoy (v real_l1_ops);
SELECT quantizer, codes, code_bytes FROM hannoy_index_stats('quant_small_bin');
SELECT quantizer, codes, code_bytes FROM hannoy_index_stats('quant_small_auto');
SET enable_seqscan = off;
SET hannoy.ef_search = 40;
SELECT id, v <+> '{5,5,3}' AS dist FROM quant_small ORDER BY v <+> '{5,5,3}' LIMIT 3;
RESET enable_seqscan;
RESET hannoy.ef_search;
CREATE TABLE quant_empty (id int, v real[]);
CREATE INDEX quant_empty_bin ON quant_empty USING hannoy (v) WITH (quantizer = 'binary');
INSERT INTO quant_empty VALUES (1, '{1,2,3}');
SELECT quantizer, codes FROM hannoy_index_stats('quant_empty_bin');

DROP TABLE quant_small, quant_empty;
DROP FUNCTION quant_first_window_matches(int);
DROP TABLE quant_t;
