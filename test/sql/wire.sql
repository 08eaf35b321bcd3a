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
-- the payload as received, createdAt as Jackson writes a java.util.Date
-- (ISO-8601 UTC with milliseconds and +00:00).
SELECT event_name,
       value ~ '^\{"id":\d+,"valuePerKey":\{.*\},"objectCollectionPerKey":\{.*\},"createdAt":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"\}$' AS dto_shape,
       position('Søknad om skoleskyss' in value) > 0 AS raw_utf8,
       position(': ' in value) = 0 AS compact,
       (value::jsonb - 'id' - 'createdAt') = :'instance'::jsonb AS payload_as_received
FROM flyt.outbox WHERE value IS NOT NULL ORDER BY id;
SELECT event_name, value IS NULL AS null_value FROM flyt.outbox WHERE value IS NULL;

-- The flow headers header is itself compact JSON text.
SELECT event_name, position(': ' in headers ->> 'flyt.instance-flow-headers') = 0 AS compact
FROM flyt.outbox WHERE event_name <> 'instance-deleted' ORDER BY id;

-- Stored as jsonb key for key: keys of every length and non-ASCII bytes are
-- found again by the jsonb operators (jsonb orders them by length, then bytes).
\set VERBOSITY default
SELECT flyt_register_instance(:'headers',
	'{"valuePerKey": {"b": "1", "a": "2", "ab": "3", "å": "4", "zz": "5", "": "6", "aaa": null},
	  "objectCollectionPerKey": {"x": [{"valuePerKey": {"k": "v"}}], "": null}}') AS keys_id \gset
SELECT payload = '{"valuePerKey": {"b": "1", "a": "2", "ab": "3", "å": "4", "zz": "5", "": "6", "aaa": null},
	  "objectCollectionPerKey": {"x": [{"valuePerKey": {"k": "v"}, "objectCollectionPerKey": {}}], "": []}}'::jsonb AS canonical,
       payload = payload::text::jsonb AS same_as_reparsed,
       (SELECT bool_and(payload -> 'valuePerKey' -> k = v) FROM jsonb_each(payload -> 'valuePerKey') AS e(k, v)) AS every_key_found,
       payload -> 'valuePerKey' ->> 'å' AS non_ascii_key,
       payload -> 'objectCollectionPerKey' -> 'x' -> 0 -> 'valuePerKey' ->> 'k' AS nested
FROM flyt.instance WHERE id = :keys_id;
-- Every character that JSON text escapes arrives unchanged.
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey',
	jsonb_build_object(E'k"\\\n', E'q"b\\s\n\r\t\b\f\u0001\u001f/å€😀'))) AS esc_id \gset
SELECT payload -> 'valuePerKey' ->> E'k"\\\n' = E'q"b\\s\n\r\t\b\f\u0001\u001f/å€😀' AS escapes_kept
FROM flyt.instance WHERE id = :esc_id;

-- Flow headers are limited: 64 kB of JSON text, 32 levels of nesting (they
-- are stored and sent on with every event of the instance).
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('futureField', repeat('x', 2 * 1024 * 1024)), '{}');
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('futureField', repeat('x', 65000)), '{}') AS big_headers_id \gset
SELECT length(flow_headers ->> 'futureField') AS kept_65000 FROM flyt.instance WHERE id = :big_headers_id;
SELECT flyt_instance_dispatched(:'headers'::jsonb || jsonb_build_object('instanceId', 1, 'futureField', repeat('x', 70000)));
-- 32 levels (the headers object itself is the first) are fine, 33 are not.
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('futureField', (repeat('[', 31) || repeat(']', 31))::jsonb), '{}') > 0 AS depth_32_accepted;
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('futureField', (repeat('[', 32) || repeat(']', 32))::jsonb), '{}');
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('futureField', (repeat('{"a":', 2000) || '1' || repeat('}', 2000))::jsonb), '{}');
SELECT flyt_instance_dispatched(:'headers'::jsonb || jsonb_build_object('instanceId', 1, 'deep', (repeat('[', 40) || repeat(']', 40))::jsonb));
-- A key with escapes or control characters is not quoted.
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object('dyp-ø', (repeat('[', 40) || repeat(']', 40))::jsonb), '{}');
SELECT flyt_register_instance(:'headers'::jsonb || jsonb_build_object(E'dyp\n"', (repeat('[', 40) || repeat(']', 40))::jsonb), '{}');

-- A jsonb argument more than 8 times max_instance_bytes (jsonb is at most 6
-- times its compact text) is refused before it is even detoasted.
SET flyt_instance.max_instance_bytes = '1kB';
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object('big', repeat('x', 10000))));
RESET flyt_instance.max_instance_bytes;

-- Instances are limited to 100000 JSON values (objects, arrays, strings,
-- numbers, booleans, nulls; not keys), ignored fields included: they are
-- parsed as well.  The root and the array are 2, so 99998 elements are fine
-- and 99999 are not.  (Ignored, they leave the stored instance and its
-- message small.)
CREATE FUNCTION pg_temp.wide(elements int) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('ignored', (SELECT jsonb_agg(1) FROM generate_series(1, elements)))
$$;
SELECT flyt_register_instance(:'headers', pg_temp.wide(99998)) AS wide_id \gset
SELECT payload FROM flyt.instance WHERE id = :wide_id;
SELECT flyt_register_instance(:'headers', pg_temp.wide(99999));
-- The same for instances in a collection: the root, objectCollectionPerKey
-- and the array are 3.
SELECT flyt_register_instance(:'headers',
	('{"objectCollectionPerKey":{"a":[' || repeat('{},', 99997) || '{}]}}')::jsonb);

-- Paths in messages are cut after 200 bytes, control characters shown as ?.
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object(repeat('k', 300), '[]'::jsonb)));
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object(E'line\nbreak', '[]'::jsonb)));
