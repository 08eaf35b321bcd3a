-- The Kafka wire format of queued messages, checked against the fixtures in
-- test/fixtures (copies of the original service's messages).
\set headers `cat test/fixtures/instance-received.headers.json`
\set instance `cat test/fixtures/instance-received.value.json`

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;
SELECT flyt_register_instance(:'headers', :'instance') AS id \gset
SELECT flyt_retry(:id) AS correlation \gset
SELECT flyt_instance_dispatched(:'headers'::jsonb || jsonb_build_object('instanceId', :id)) AS dispatched;

-- Every message: topic {org with dashes}.{context}.event.{name}, key = the
-- instance id as text, exactly two headers, flyt.event-id a random UUID.
SELECT id, event_name, topic, key,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(headers) k) AS header_names,
       headers ->> 'flyt.event-id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS event_id_is_uuid
FROM flyt.outbox ORDER BY id;

-- flyt.instance-flow-headers: every field of the received headers, unchanged,
-- plus instanceId; the retry carries the new correlationId.
SELECT o.id, f.key, f.value = coalesce(h.value, 'null') AS as_received, f.value
FROM flyt.outbox o,
     jsonb_each((o.headers ->> 'flyt.instance-flow-headers')::jsonb) f
     LEFT JOIN jsonb_each(:'headers'::jsonb) h ON h.key = f.key
WHERE f.key NOT IN ('correlationId') OR o.event_name <> 'instance-requested-for-retry'
ORDER BY o.id, f.key;
SELECT (headers ->> 'flyt.instance-flow-headers')::jsonb ->> 'correlationId' = :'correlation' AS retry_correlation
FROM flyt.outbox WHERE event_name = 'instance-requested-for-retry';

-- Values: compact JSON with the DTO's field order, UTF-8 as is (not \u escapes),
-- the payload as received, createdAt in ISO-8601 UTC with milliseconds.
SELECT event_name,
       value ~ '^\{"id":\d+,"valuePerKey":\{.*\},"objectCollectionPerKey":\{.*\},"createdAt":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"\}$' AS dto_shape,
       position('Søknad om skoleskyss' in value) > 0 AS raw_utf8,
       position(': ' in value) = 0 AS compact,
       (value::jsonb - 'id' - 'createdAt') = :'instance'::jsonb AS payload_as_received
FROM flyt.outbox WHERE value IS NOT NULL ORDER BY id;
SELECT event_name, value IS NULL AS null_value FROM flyt.outbox WHERE value IS NULL;

-- The flow headers header is itself compact JSON text.
SELECT event_name, position(': ' in headers ->> 'flyt.instance-flow-headers') = 0 AS compact
FROM flyt.outbox WHERE event_name <> 'instance-deleted' ORDER BY id;
