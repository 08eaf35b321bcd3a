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
-- instance-deleted: the dispatched record's headers, no value.
SELECT event_name, topic, key = :'id' AS keyed_by_id,
       jsonb_strip_nulls((headers ->> 'flyt.instance-flow-headers')::jsonb) = jsonb_strip_nulls(:'dispatched_headers'::jsonb) AS dispatched_headers,
       value IS NULL AS null_value
FROM flyt.outbox WHERE event_name = 'instance-deleted';

-- Already gone: false, and instance-deleted is queued all the same with the
-- dispatched record's headers, as the original does (its deleteById is a
-- no-op then); nothing is recorded in the history.
SELECT flyt_instance_dispatched(:'dispatched_headers') AS deleted_again;
SELECT count(*) AS deleted_messages FROM flyt.outbox WHERE event_name = 'instance-deleted';
SELECT count(*) AS history_rows FROM flyt_instance_history(:id);
-- An instance this database never had: the same.
SELECT flyt_instance_dispatched(:'headers'::jsonb || '{"instanceId": 987654321}') AS deleted_unknown;
SELECT key, (headers ->> 'flyt.instance-flow-headers')::jsonb ->> 'instanceId' AS header_instance_id
FROM flyt.outbox WHERE event_name = 'instance-deleted' ORDER BY id DESC LIMIT 1;
SELECT flyt_instance(:id);

-- Bad input.
SELECT flyt_instance_dispatched(:'headers');
SELECT flyt_instance_dispatched(:'headers'::jsonb || '{"instanceId": "1"}');
SELECT flyt_instance_dispatched('{"instanceId": 1}');
SELECT flyt_instance_dispatched(NULL);
