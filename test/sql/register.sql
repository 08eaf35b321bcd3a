-- flyt_register_instance: what the consumer does for instance-received.
\set headers `cat test/fixtures/instance-received.headers.json`
\set instance `cat test/fixtures/instance-received.value.json`
\set VERBOSITY default

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;

SELECT flyt_register_instance(:'headers', :'instance') AS id \gset

-- Stored: the canonical payload, the headers with instanceId set, the searchable fields.
SELECT payload = (:'instance'::jsonb) AS payload_as_received,
       flow_headers = (:'headers'::jsonb || jsonb_build_object('instanceId', id)) AS headers_with_instance_id,
       source_application_id, source_application_integration_id,
       source_application_instance_id, integration_id
FROM flyt.instance WHERE id = :id;

-- One REGISTERED event with the received correlation id.
SELECT version, event_type, correlation_id, requested_by = current_user AS by_current_user
FROM flyt_instance_history(:id);

-- One instance-registered message.
SELECT event_name, topic, key = :'id' AS keyed_by_id, attempts, last_error
FROM flyt.outbox ORDER BY id;

-- flyt_instance returns the DTO.
SELECT (flyt_instance(:id) - 'id' - 'createdAt') = (:'instance'::jsonb) AS dto_payload,
       (flyt_instance(:id) ->> 'id')::bigint = :id AS dto_id,
       flyt_instance(:id) ->> 'createdAt' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$' AS dto_created_at_format,
       (flyt_instance(:id) ->> 'createdAt')::timestamptz = date_trunc('milliseconds', created_at) AS dto_created_at
FROM flyt.instance WHERE id = :id;

-- Unknown top-level fields are ignored, id and createdAt on input are ignored,
-- missing valuePerKey / objectCollectionPerKey become empty objects.
SELECT flyt_register_instance(:'headers',
	'{"id": 999, "createdAt": 1732270530123, "extra": [1], "valuePerKey": {"a": null}}') AS id2 \gset
SELECT payload FROM flyt.instance WHERE id = :id2;
SELECT flyt_register_instance(:'headers', '{"createdAt": "2026-11-22T10:15:30.123Z"}') AS id3 \gset
SELECT payload FROM flyt.instance WHERE id = :id3;
-- Unknown header fields are kept and passed on.
SELECT flyt_register_instance(:'headers'::jsonb || '{"futureField": {"x": 1}}', '{}') AS id4 \gset
SELECT flow_headers -> 'futureField' AS kept FROM flyt.instance WHERE id = :id4;

-- valuePerKey numbers and booleans are taken as their text, as Jackson's
-- Map<String, String> takes them (1.50 stays 1.50); null stays null.
SELECT flyt_register_instance(:'headers',
	'{"valuePerKey": {"i": 1, "d": 1.50, "e": -2E+3, "t": true, "f": false, "n": null, "s": "1"}}') AS id5 \gset
SELECT payload FROM flyt.instance WHERE id = :id5;
SELECT flyt_register_instance(:'headers',
	'{"objectCollectionPerKey":{"a":[{"objectCollectionPerKey":{"b":[{"valuePerKey":{"c":true, "d": 0}}]}}]}}') AS id6 \gset
SELECT payload FROM flyt.instance WHERE id = :id6;
-- and the DTO sends them as strings.  (Through SQL the argument is jsonb,
-- which keeps 1.50 but writes -2E+3 as -2000; from Kafka the text is kept
-- as it came: test/integration/contract.sh.)
SELECT flyt_instance(:id5) -> 'valuePerKey' AS dto_values;

-- Nothing below may leave anything behind.
SELECT count(*) AS instances_before FROM flyt.instance \gset

-- Invalid instances: SQLSTATE 22023 naming the path (codes: test/pgtap).
SELECT flyt_register_instance(:'headers', '[]');
SELECT flyt_register_instance(:'headers', '"text"');
SELECT flyt_register_instance(:'headers', '{"valuePerKey": []}');
SELECT flyt_register_instance(:'headers', '{"valuePerKey": {"a": [1]}}');
SELECT flyt_register_instance(:'headers', '{"valuePerKey": 1}');
SELECT flyt_register_instance(:'headers', '{"valuePerKey": {"a": {"b": "c"}}}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey": []}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey": {"parter": {}}}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey": {"parter": [{}, "x"]}}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey":{"parter":[{"valuePerKey":{}},{"valuePerKey":{"navn":{}}}]}}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey":{"a":[{"objectCollectionPerKey":{"b":[{"valuePerKey":{"c":[true]}}]}}]}}');
SELECT flyt_register_instance(:'headers', '{"objectCollectionPerKey": {"parter": [1]}}');
SELECT flyt_register_instance(:'headers', '{"createdAt": true}');

-- Nesting: 64 levels are fine, 65 are not.
CREATE FUNCTION pg_temp.nested(levels int) RETURNS jsonb LANGUAGE sql AS $$
	SELECT (repeat('{"objectCollectionPerKey":{"a":[', levels - 1) || '{}' || repeat(']}}', levels - 1))::jsonb
$$;
SELECT flyt_register_instance(:'headers', pg_temp.nested(64)) > 0 AS depth_64_accepted;
SELECT count(*) AS instances_before FROM flyt.instance \gset
SELECT set_config('my.headers', :'headers', false) IS NOT NULL AS headers_set;
DO $$
BEGIN
	PERFORM flyt_register_instance(current_setting('my.headers')::jsonb, pg_temp.nested(65));
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE 'depth 65: % ... %', left(SQLERRM, 36), right(SQLERRM, 30);
END $$;
SELECT count(*) - :instances_before AS left_behind FROM flyt.instance;

-- Size limit (flyt_instance.max_instance_bytes): SQLSTATE 54000.
SET flyt_instance.max_instance_bytes = '1kB';
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object('big', repeat('x', 1000))));
SELECT flyt_register_instance(:'headers', jsonb_build_object('valuePerKey', jsonb_build_object('small', repeat('x', 900)))) > 0 AS under_limit;
RESET flyt_instance.max_instance_bytes;
SELECT count(*) AS big_stored FROM flyt.instance WHERE payload -> 'valuePerKey' ? 'big';

-- Invalid headers: SQLSTATE 22023 naming the field.
SELECT flyt_register_instance('[]', '{}');
SELECT flyt_register_instance('null', '{}');
SELECT flyt_register_instance('"x"', '{}');
SELECT flyt_register_instance('{}', '{}');
SELECT flyt_register_instance('{"correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": "2", "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2.5, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": null}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": 42}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "not-a-uuid"}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e3c554e0a9d1e5f2b0c1d7a11"}', '{}');
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a1g"}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"fileIds": "x"}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"fileIds": ["3f1d2c4b-8a9e-4b7c-9d0e-1a2b3c4d5e6f", 7]}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"integrationId": "17"}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"instanceId": true}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"configurationId": 1.5}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"sourceApplicationInstanceId": 5}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"sourceApplicationIntegrationId": []}', '{}');
SELECT flyt_register_instance(:'headers'::jsonb || '{"archiveInstanceId": {}}', '{}');

-- NULL arguments.
SELECT flyt_register_instance(NULL, '{}');
SELECT flyt_register_instance(:'headers', NULL);

-- Optional header fields may be null or absent.
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "9B7A1F0E-3C55-4E0A-9D1E-5F2B0C1D7A11", "fileIds": null, "integrationId": null}', '{}') > 0 AS minimal_headers;

SELECT count(*) - :instances_before AS registered_after_errors FROM flyt.instance;
SELECT count(*) AS messages_queued FROM flyt.outbox;
