-- flyt_cleanup: retention.
\set headers `cat test/fixtures/instance-received.headers.json`

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;

-- Five instances aged 10, 20, 30, 40 and 70 days, one of them without flow headers.
SELECT count(flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object('n', n::text)))) AS registered
FROM generate_series(1, 4) n;
INSERT INTO flyt.instance (payload) VALUES ('{"valuePerKey": {}, "objectCollectionPerKey": {}}');
UPDATE flyt.instance SET created_at = now() - make_interval(days => d)
FROM (SELECT id, (ARRAY[10, 20, 30, 40, 70])[row_number() OVER (ORDER BY id)] AS d FROM flyt.instance) a
WHERE a.id = instance.id;
SELECT id AS oldest FROM flyt.instance ORDER BY created_at LIMIT 1 \gset
TRUNCATE flyt.outbox;

-- Default window: flyt_instance.time_to_keep_instance_in_days (60).
SELECT current_setting('flyt_instance.time_to_keep_instance_in_days') AS days;
SELECT flyt_cleanup() AS deleted;
-- The one over 60 days had no flow headers: nothing queued for it, but DELETED is recorded.
SELECT count(*) AS queued FROM flyt.outbox;
SELECT version, event_type FROM flyt_instance_history(:oldest);

-- max_rows bounds one call; the oldest go first.
SELECT flyt_cleanup('15 days', 2) AS deleted;
SELECT array_agg((now() - created_at) > '35 days' ORDER BY created_at) AS older_gone FROM flyt.instance;
SELECT event_name, value IS NULL AS null_value, (headers ->> 'flyt.instance-flow-headers')::jsonb ->> 'sourceApplicationInstanceId' AS source_instance
FROM flyt.outbox ORDER BY id;
-- The flow headers are written as every other event writes them (compact
-- JSON, as flyt_retry queues them), with a random UUID as flyt.event-id.
SELECT flyt_retry(id) IS NOT NULL AS retried FROM flyt.instance ORDER BY id LIMIT 1;
SELECT strpos(headers ->> 'flyt.instance-flow-headers', '": ') = 0 AS compact,
       headers ->> 'flyt.event-id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS event_id_is_uuid,
       count(*)
FROM flyt.outbox GROUP BY 1, 2;
DELETE FROM flyt.outbox WHERE event_name = 'instance-requested-for-retry';
DELETE FROM flyt.instance_event WHERE event_type = 'RETRY_REQUESTED';
-- Their history is replaced by one DELETED row with the next version.
SELECT e.instance_id IN (SELECT id FROM flyt.instance) AS still_stored, event_type, version
FROM flyt.instance_event e ORDER BY e.instance_id, version;

-- Nothing expired: nothing happens.
SELECT flyt_cleanup('1 year') AS deleted;

-- The DELETED rows stay one more window, then the history is purged.
UPDATE flyt.instance_event SET occurred_at = now() - interval '61 days' WHERE instance_id = :oldest;
SELECT flyt_cleanup() AS deleted;
SELECT count(*) AS history_of_oldest FROM flyt.instance_event WHERE instance_id = :oldest;
SELECT flyt_instance_history(:oldest);

-- Zero keeps nothing.
SELECT flyt_cleanup('0') AS deleted;
SELECT count(*) AS remaining FROM flyt.instance;

-- Bad arguments.
SELECT flyt_cleanup('-1 day');
SELECT flyt_cleanup('1 day', 0);
SELECT flyt_cleanup('1 day', -5);

-- No JIT for the cleanup's statements, even where the settings would have
-- every statement but the call itself (cost 0.01) compiled: the backend has
-- not loaded the JIT provider after a cleanup that deleted and queued.  The
-- control query shows that the check sees it when something was compiled
-- (true where no JIT is installed).
\c
SELECT count(flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object('n', n::text)))) AS registered
FROM generate_series(1, 3) n;
SET jit = on;
SET jit_above_cost = 1;
SET jit_inline_above_cost = -1;
SET jit_optimize_above_cost = -1;
SELECT flyt_cleanup('0') AS deleted;
SELECT current_setting('jit') AS jit_after_cleanup,
       strpos(pg_read_file('/proc/' || pg_backend_pid() || '/maps'), 'llvmjit') = 0 AS cleanup_not_compiled;
SELECT count(*) FROM generate_series(1, 1000) g WHERE g % 7 = 0;
SELECT NOT pg_jit_available() OR strpos(pg_read_file('/proc/' || pg_backend_pid() || '/maps'), 'llvmjit') > 0 AS control_compiled;
RESET jit; RESET jit_above_cost; RESET jit_inline_above_cost; RESET jit_optimize_above_cost;

-- A batch keeps the deleted instances' flow headers in memory, even with
-- the smallest work_mem: no temporary file for 500 of them.
SELECT count(flyt_register_instance(:'headers', '{"valuePerKey": {}}'::jsonb)) AS registered;
INSERT INTO flyt.instance (id, payload, flow_headers, created_at) OVERRIDING SYSTEM VALUE
SELECT 100000 + g, i.payload, i.flow_headers, now() - interval '100 days'
FROM flyt.instance i, generate_series(1, 500) g;
INSERT INTO flyt.instance_event (instance_id, version, event_type)
SELECT id, 1, 'REGISTERED' FROM flyt.instance WHERE id > 100000;
SET work_mem = '64kB';
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT temp_files AS temp_files_before FROM pg_stat_database WHERE datname = current_database() \gset
SELECT flyt_cleanup('30 days') AS deleted, current_setting('work_mem') AS work_mem_after;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT temp_files - :temp_files_before AS temp_files_written FROM pg_stat_database WHERE datname = current_database();
SELECT count(*) AS queued FROM flyt.outbox WHERE event_name = 'instance-deleted' AND key::bigint > 100000;
RESET work_mem;
