-- flyt_instance_dispatched: what the consumer does for instance-dispatched.
\set headers `cat test/fixtures/instance-received.headers.json`
\set instance `cat test/fixtures/instance-received.value.json`

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;

SELECT flyt_register_instance(:'headers', :'instance') AS id \gset
SELECT (:'headers'::jsonb || jsonb_build_object('instanceId', :id)) AS dispatched_headers \gset

SELECT flyt_instance_dispatched(:'dispatched_headers') AS deleted;
SELECT count(*) AS still_stored FROM flyt.instance WHERE id = :id;
-- DISPATCHED and DELETED are recorded; the history outlives the instance.
SELECT version, event_type, correlation_id FROM flyt_instance_history(:id);
-- instance-deleted: the stored headers, no value.
SELECT event_name, topic, key = :'id' AS keyed_by_id,
       (headers ->> 'flyt.instance-flow-headers')::jsonb = :'dispatched_headers'::jsonb AS stored_headers,
       value IS NULL AS null_value
FROM flyt.outbox WHERE event_name = 'instance-deleted';

-- Already gone: false, and nothing queued.
SELECT flyt_instance_dispatched(:'dispatched_headers') AS deleted_again;
SELECT count(*) AS deleted_messages FROM flyt.outbox WHERE event_name = 'instance-deleted';
SELECT flyt_instance(:id);

-- Bad input.
SELECT flyt_instance_dispatched(:'headers');
SELECT flyt_instance_dispatched(:'headers'::jsonb || '{"instanceId": "1"}');
SELECT flyt_instance_dispatched('{"instanceId": 1}');
SELECT flyt_instance_dispatched(NULL);
