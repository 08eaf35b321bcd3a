-- Every error path of the SQL API raises its documented SQLSTATE, and a
-- failed call leaves nothing behind.
BEGIN;
SELECT plan(47);

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;
CREATE TEMP TABLE h AS SELECT
	'{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}'::jsonb AS headers;
SELECT flyt_register_instance(headers, '{"valuePerKey": {"a": "b"}}') FROM h;
INSERT INTO flyt.instance (payload) VALUES ('{"valuePerKey": {}, "objectCollectionPerKey": {}}');

CREATE FUNCTION pg_temp.reg(headers text, instance text) RETURNS bigint LANGUAGE sql
AS $$ SELECT flyt_register_instance(headers::jsonb, instance::jsonb) $$;

-- flyt_register_instance: instances
SELECT throws_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h), '[]')$$, '22023', 'instance must be a JSON object', 'array instance');
SELECT throws_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h), '{"valuePerKey": {"navn": {"x": "y"}}}')$$, '22023', 'valuePerKey.navn must be a string', 'object in valuePerKey');
SELECT throws_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h), '{"objectCollectionPerKey":{"parter":[{"valuePerKey":{}},{"valuePerKey":{"navn":[5]}}]}}')$$,
	'22023', 'objectCollectionPerKey.parter[1].valuePerKey.navn must be a string', 'the path of SPEC section 3');
SELECT throws_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h), '{"objectCollectionPerKey": {"a": 1}}')$$, '22023', 'objectCollectionPerKey.a must be an array of instances', 'collection not an array');
SELECT throws_like($$SELECT pg_temp.reg((SELECT headers::text FROM h),
	repeat('{"objectCollectionPerKey":{"a":[', 64) || '{}' || repeat(']}}', 64))$$, '%nested deeper than 64 levels', 'nesting over 64 levels');
SELECT lives_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h),
	repeat('{"objectCollectionPerKey":{"a":[', 63) || '{}' || repeat(']}}', 63))$$, 'nesting of 64 levels');
SET LOCAL flyt_instance.max_instance_bytes = '1kB';
SELECT throws_ok($$SELECT pg_temp.reg((SELECT headers::text FROM h), '{"valuePerKey": {"a": "' || repeat('x', 2000) || '"}}')$$, '54000', 'instance is too large', 'over max_instance_bytes');
RESET flyt_instance.max_instance_bytes;
SELECT throws_ok($$SELECT flyt_register_instance((SELECT headers FROM h), NULL)$$, '22004', 'instance must not be null', 'NULL instance');

-- flyt_register_instance: headers
SELECT throws_ok($$SELECT pg_temp.reg('{}', '{}')$$, '22023', 'headers.sourceApplicationId is required', 'missing sourceApplicationId');
SELECT throws_ok($$SELECT pg_temp.reg('{"sourceApplicationId": 2}', '{}')$$, '22023', 'headers.correlationId is required', 'missing correlationId');
SELECT throws_ok($$SELECT pg_temp.reg('{"sourceApplicationId": 2, "correlationId": "nope"}', '{}')$$, '22023', 'headers.correlationId must be a UUID', 'non-UUID correlationId');
SELECT throws_ok($$SELECT pg_temp.reg('{"sourceApplicationId": "2", "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}')$$, '22023', 'headers.sourceApplicationId must be an integer', 'string sourceApplicationId');
SELECT throws_ok($$SELECT pg_temp.reg('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11", "fileIds": ["x"]}', '{}')$$, '22023', 'headers.fileIds[0] must be a UUID', 'non-UUID file id');
SELECT throws_ok($$SELECT pg_temp.reg('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11", "integrationId": "x"}', '{}')$$, '22023', 'headers.integrationId must be an integer', 'string integrationId');
SELECT throws_ok($$SELECT pg_temp.reg('[1]', '{}')$$, '22023', 'headers must be a JSON object', 'array headers');
SELECT throws_ok($$SELECT flyt_register_instance(NULL, '{}')$$, '22004', 'headers must not be null', 'NULL headers');

-- flyt_instance
SELECT throws_ok($$SELECT flyt_instance(424242)$$, 'P0002', 'instance 424242 not found', 'flyt_instance: unknown id');
SELECT throws_ok($$SELECT flyt_instance(NULL)$$, '22004', 'instance_id must not be null', 'flyt_instance: NULL');

-- flyt_retry
SELECT throws_ok($$SELECT flyt_retry(42)$$, 'P0002', 'instance 42 not found', 'flyt_retry: unknown id');
SELECT throws_ok($$SELECT flyt_retry(2)$$, '55000', 'instance 2 has no flow headers', 'flyt_retry: no flow headers');
SELECT throws_ok($$SELECT flyt_retry(NULL)$$, '22004', 'instance_id must not be null', 'flyt_retry: NULL');

-- flyt_retry_batch
SELECT throws_ok($$SELECT * FROM flyt_retry_batch(NULL)$$, '22004', 'instance_ids must not be null', 'batch: NULL array');
SELECT throws_ok($$SELECT * FROM flyt_retry_batch('{{1},{2}}')$$, '2202E', 'instance_ids must be a one-dimensional array', 'batch: 2-D array');
SELECT is((SELECT count(*) FROM flyt_retry_batch('{}')), 0::bigint, 'batch: empty array gives no rows');
SELECT results_eq($$SELECT instance_id, status FROM flyt_retry_batch(ARRAY[1, 1, NULL, 42, 2, NULL, 1])$$,
	$$VALUES (1::bigint, 'queued'), (NULL, 'not_found'), (42, 'not_found'), (2, 'no_flow_headers')$$,
	'batch: duplicates once, NULL as not_found, order kept');

-- flyt_instance_dispatched
SELECT throws_ok($$SELECT flyt_instance_dispatched((SELECT headers FROM h))$$, '22023', 'headers.instanceId is required', 'dispatched: no instanceId');
SELECT throws_ok($$SELECT flyt_instance_dispatched(NULL)$$, '22004', 'headers must not be null', 'dispatched: NULL');
SELECT is(flyt_instance_dispatched((SELECT headers FROM h) || '{"instanceId": 4242}'), false, 'dispatched: unknown id is false');

-- flyt_cleanup
SELECT throws_ok($$SELECT flyt_cleanup('-1 day')$$, '22023', 'older_than must not be negative', 'cleanup: negative interval');
SELECT throws_ok($$SELECT flyt_cleanup(NULL, 0)$$, '22023', 'max_rows must be positive', 'cleanup: zero max_rows');

-- flyt_instance_history
SELECT throws_ok($$SELECT * FROM flyt_instance_history(4242)$$, 'P0002', 'instance 4242 not found', 'history: unknown id');
SELECT throws_ok($$SELECT * FROM flyt_instance_history(NULL)$$, '22004', 'instance_id must not be null', 'history: NULL');

-- Nothing half-written: every failed call above left the tables as they were
-- (1 registered + 1 bare + 1 nested + 1 batch retry).
SELECT is((SELECT count(*) FROM flyt.instance), 3::bigint, 'only the valid registrations are stored');
SELECT is((SELECT count(*) FROM flyt.outbox), 4::bigint,
	'only their messages, the batch retry and the instance-deleted of the unknown dispatched id (the original sends it too) are queued');
SELECT is((SELECT count(*) FROM flyt.instance_event), 3::bigint, 'only their events are recorded');

-- A failure after the instance row was written (no org_id -> no topic) undoes the row.
-- org_id is server-wide, so simulate the late failure with a trigger on the outbox.
CREATE FUNCTION pg_temp.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$;
CREATE TRIGGER fail BEFORE INSERT ON flyt.outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.fail();
SELECT throws_ok($$SELECT flyt_register_instance((SELECT headers FROM h), '{}')$$, 'P0001', 'outbox unavailable', 'register fails late');
SELECT throws_ok($$SELECT flyt_retry(1)$$, 'P0001', 'outbox unavailable', 'retry fails late');
SELECT throws_ok($$SELECT flyt_instance_dispatched((SELECT headers FROM h) || '{"instanceId": 1}')$$, 'P0001', 'outbox unavailable', 'dispatched fails late');
DROP TRIGGER fail ON flyt.outbox;
SELECT is((SELECT count(*) FROM flyt.instance), 3::bigint, 'late failures left no instance behind and deleted none');
SELECT is((SELECT count(*) FROM flyt.instance_event), 3::bigint, 'late failures left no event behind');
SELECT is((SELECT max(version) FROM flyt.instance_event WHERE instance_id = 1), 2, 'instance 1 history untouched');

-- The stored rows keep their shape whatever writes them (domains since 0.5),
-- on INSERT and on UPDATE, and the error names the rule.
SELECT throws_ok($$INSERT INTO flyt.instance_event (instance_id, version, event_type) VALUES (1, 9, 'EXPLODED')$$,
	'23514', 'value for domain flyt.instance_event_type violates check constraint "instance_event_type_check"', 'unknown event type refused');
SELECT throws_ok($$INSERT INTO flyt.instance_event (instance_id, version, event_type) VALUES (1, 0, 'DELETED')$$,
	'23514', 'value for domain flyt.instance_event_version violates check constraint "instance_event_version_positive"', 'version 0 refused');
SELECT throws_ok($$UPDATE flyt.instance_event SET version = -1 WHERE instance_id = 1$$,
	'23514', 'value for domain flyt.instance_event_version violates check constraint "instance_event_version_positive"', 'negative version refused on update');
SELECT throws_ok($$INSERT INTO flyt.outbox (event_name, topic, headers) VALUES ('x', 't', '[]')$$,
	'23514', 'value for domain flyt.outbox_headers violates check constraint "outbox_headers_is_object"', 'outbox headers not an object refused');
SELECT throws_ok($$INSERT INTO flyt.outbox (event_name, topic, headers, attempts) VALUES ('x', 't', '{}', -1)$$,
	'23514', 'value for domain flyt.outbox_attempts violates check constraint "outbox_attempts_check"', 'negative attempts refused');
SELECT throws_ok($$UPDATE flyt.outbox SET attempts = attempts - 100$$,
	'23514', 'value for domain flyt.outbox_attempts violates check constraint "outbox_attempts_check"', 'negative attempts refused on update');

SELECT * FROM finish();
ROLLBACK;
