-- Large instances (100 kB, 1 MB, 10 MB) through every function that returns
-- or queues an instance.  flyt_instance() once read the DTO after SPI had
-- freed it: a crash for large instances, garbage or luck for small ones.
\set headers `cat test/fixtures/instance-received.headers.json`

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;

CREATE TEMP TABLE big (label text, bytes int, id bigint, instance jsonb);
INSERT INTO big (label, bytes, instance)
SELECT label, bytes,
       jsonb_build_object(
         'valuePerKey', jsonb_build_object('a', repeat('x', bytes), 'navn', 'Ærlig Østerås Åse'),
         'objectCollectionPerKey', jsonb_build_object(
           'parter', jsonb_build_array(
             jsonb_build_object('valuePerKey', jsonb_build_object('b', repeat('y', bytes / 10)),
                                'objectCollectionPerKey', '{}'::jsonb))))
FROM (VALUES ('100 kB', 102400), ('1 MB', 1048576), ('10 MB', 10485760)) v(label, bytes);

UPDATE big SET id = flyt_register_instance(:'headers', instance);

-- flyt_instance returns the whole instance, byte for byte, as the DTO.
SELECT label,
       f ->> 'id' = id::text AS dto_id,
       f -> 'valuePerKey' = instance -> 'valuePerKey' AS values_equal,
       f -> 'objectCollectionPerKey' = instance -> 'objectCollectionPerKey' AS collections_equal,
       f - 'id' - 'createdAt' = instance AS nothing_else
FROM big, LATERAL flyt_instance(id) f
ORDER BY bytes;

-- Called twice in one query (the second call must not see the first's memory).
SELECT label, flyt_instance(id) = flyt_instance(id) AS stable FROM big ORDER BY bytes;

-- instance-registered carries the same DTO.
SELECT b.label, o.value::jsonb = flyt_instance(b.id) AS registered_value_is_dto
FROM big b JOIN flyt.outbox o ON o.key = b.id::text AND o.event_name = 'instance-registered'
ORDER BY b.bytes;

-- flyt_retry, flyt_retry_batch and flyt_api.retry queue the same DTO.
SELECT label, flyt_retry(id) IS NOT NULL AS retried FROM big ORDER BY bytes;
SELECT status, count(*) FROM flyt_retry_batch((SELECT array_agg(id ORDER BY bytes) FROM big)) GROUP BY status;
BEGIN;
SELECT set_config('request.jwt.claims', '{"organizationid": "fintlabs.no", "objectidentifier": "0b9a4c2e-6f1d-4c1e-9a57-3e2d1f0c8b7a", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/admin"]}', true) IS NOT NULL AS claims_set;
SELECT label, flyt_api.retry(id) IS NOT NULL AS api_retried FROM big ORDER BY bytes;
COMMIT;
SELECT b.label, count(*) AS retry_messages, bool_and(o.value::jsonb = flyt_instance(b.id)) AS retry_value_is_dto
FROM big b JOIN flyt.outbox o ON o.key = b.id::text AND o.event_name = 'instance-requested-for-retry'
GROUP BY b.label, b.bytes ORDER BY b.bytes;

-- flyt_status builds its last cleanup run inside SPI: it must survive SPI_finish.
INSERT INTO flyt.cleanup_run (cutoff, status, finished_at, deleted, deleted_without_event, error)
VALUES (now(), 'failed', now(), 3, 1, repeat('e', 200));
SELECT s -> 'cleanup' -> 'last_run' ->> 'status' AS last_status,
       s -> 'cleanup' -> 'last_run' ->> 'deleted' AS deleted,
       length(s -> 'cleanup' -> 'last_run' ->> 'error') AS error_length
FROM flyt_status() s;
SELECT flyt_metrics() LIKE '%flyt_instance_outbox_backlog 12
%' AS metrics_backlog;

-- Dispatched and cleaned up: large instances leave as small ones do.
SELECT flyt_instance_dispatched(:'headers'::jsonb || jsonb_build_object('instanceId', id)) AS dispatched
FROM big WHERE label = '10 MB';
SELECT flyt_cleanup('0 seconds') AS cleaned_up;
SELECT count(*) AS left_over FROM flyt.instance;
