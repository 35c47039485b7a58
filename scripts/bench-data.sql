-- Varied rows for scripts/bench.ts, loaded next to the pgbench tables:
--   psql -v ON_ERROR_STOP=1 -v blob_rows=N -v doc_rows=N -f scripts/bench-data.sql DB
-- Every value is computed per row: a subquery that does not reference the
-- outer row is evaluated once (an InitPlan), which is how the old bench ended
-- up with identical blobs. Each subquery below mentions `i` for that reason.
-- (And an aggregate over outer columns only belongs to the outer query, so
-- the word picks are made in an inner SELECT first.)
\set ON_ERROR_STOP 1
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Incompressible bytea, 4..16 KiB per row, every row different (TOASTed out of line).
CREATE TABLE bench_blobs (
  id      integer PRIMARY KEY,
  kind    text NOT NULL,
  body    bytea NOT NULL,
  made_at timestamptz NOT NULL
);
INSERT INTO bench_blobs (id, kind, body, made_at)
SELECT i,
       (ARRAY['image/png', 'application/pdf', 'application/zip', 'application/octet-stream'])[1 + i % 4],
       (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 4 + (i * 7) % 13)),
       now() - random() * interval '730 days'
  FROM generate_series(1, :blob_rows) AS i;

-- Documents: free text from a word list, md5 identifiers, timestamps and
-- jsonb with keys and shapes that vary from row to row.
CREATE TABLE bench_docs (
  id         bigint PRIMARY KEY,
  ext_id     text NOT NULL,
  title      text NOT NULL,
  body       text NOT NULL,
  doc        jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz
);
WITH w AS (
  SELECT ARRAY['alpha', 'backup', 'cluster', 'delta', 'engine', 'failover', 'gateway', 'harbor', 'index',
               'journal', 'kernel', 'ledger', 'mirror', 'network', 'orbit', 'parcel', 'quorum', 'replica',
               'shard', 'ticket', 'upstream', 'vacuum', 'window', 'xenon', 'yield', 'zone', 'invoice',
               'customer', 'order', 'shipment', 'refund', 'account', 'session', 'token', 'region', 'latency',
               'snapshot', 'archive', 'restore', 'drill', 'manifest', 'checksum', 'compress', 'parallel',
               'stream', 'buffer', 'commit', 'rollback', 'trigger', 'schema'] AS a
)
INSERT INTO bench_docs (id, ext_id, title, body, doc, created_at, updated_at)
SELECT i,
       md5(i::text || ':' || random()::text),
       initcap(a[1 + (random() * 49)::int]) || ' ' || a[1 + (random() * 49)::int] || ' #' || (random() * 100000)::int,
       (SELECT string_agg(word, ' ') FROM (SELECT a[1 + (random() * 49)::int] AS word FROM generate_series(1, 4 + i % 24)) AS words)
         || ' ' || md5(random()::text),
       jsonb_build_object(
         'id', i,
         'kind', (ARRAY['order', 'invoice', 'user', 'event', 'ticket'])[1 + i % 5],
         'k' || (i % 37), md5(i::text),
         'score', round((random() * 1000)::numeric, 2),
         'active', random() < 0.5,
         'tags', (SELECT jsonb_agg(tag) FROM (SELECT a[1 + (random() * 49)::int] AS tag FROM generate_series(1, 1 + i % 5)) AS tags),
         'meta', jsonb_build_object('depth', i % 7, 'v' || (i % 11), random(), 'region', a[1 + i % 50])
       )
       || CASE WHEN i % 3 = 0 THEN jsonb_build_object('refund', jsonb_build_object('amount', (random() * 500)::int, 'reason', a[1 + i % 50]))
               WHEN i % 3 = 1 THEN jsonb_build_object('lines', (SELECT jsonb_agg(jsonb_build_object('sku', md5(random()::text || j)::text, 'qty', j))
                                                                   FROM generate_series(1, 1 + i % 4) AS j))
               ELSE '{}'::jsonb END,
       t,
       CASE WHEN i % 4 = 0 THEN NULL ELSE t + random() * interval '30 days' END
  FROM w, generate_series(1, :doc_rows) AS i,
       LATERAL (SELECT now() - random() * interval '730 days' + 0 * i * interval '1 s' AS t) AS ts;

CREATE UNIQUE INDEX bench_docs_ext_id_key ON bench_docs (ext_id);
CREATE INDEX bench_docs_title_idx ON bench_docs (title);
CREATE INDEX bench_docs_doc_gin ON bench_docs USING gin (doc);
CREATE INDEX bench_docs_created_idx ON bench_docs (created_at);
CREATE INDEX bench_blobs_kind_idx ON bench_blobs (kind, made_at);

VACUUM ANALYZE bench_blobs;
VACUUM ANALYZE bench_docs;
