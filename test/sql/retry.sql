-- flyt_retry and flyt_retry_batch.
\set headers `cat test/fixtures/instance-received.headers.json`
\set instance `cat test/fixtures/instance-received.value.json`

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;

SELECT flyt_register_instance(:'headers', :'instance') AS id \gset
-- An instance stored without flow headers (as migrated data may be).
INSERT INTO flyt.instance (payload) VALUES ('{"valuePerKey": {}, "objectCollectionPerKey": {}}') RETURNING id AS bare \gset
SELECT max(id) + 1000 AS unknown FROM flyt.instance \gset

SELECT flyt_retry(:id) AS correlation \gset
-- A fresh version 4 correlation id, different from the received one.
SELECT :'correlation' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS uuid_v4,
       :'correlation' <> (:'headers'::jsonb ->> 'correlationId') AS fresh;

-- The retry message: stored headers with the new correlationId, value = the DTO.
SELECT event_name, topic, key = :'id' AS keyed_by_id,
       (headers ->> 'flyt.instance-flow-headers')::jsonb
         = (:'headers'::jsonb || jsonb_build_object('instanceId', :id, 'correlationId', :'correlation')) AS flow_headers,
       headers ->> 'flyt.event-id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS event_id_is_uuid,
       value::jsonb = flyt_instance(:id) AS value_is_dto
FROM flyt.outbox WHERE event_name = 'instance-requested-for-retry';

-- History: REGISTERED, then RETRY_REQUESTED with the new correlation id.
SELECT version, event_type, correlation_id::text = :'correlation' AS new_correlation
FROM flyt_instance_history(:id);

-- Errors: unknown id, no flow headers, NULL.
SELECT flyt_retry(:unknown);
SELECT flyt_retry(:bare);
SELECT flyt_retry(NULL);

-- Batch: one row per distinct id in the order given; bad ids never fail the others.
SELECT instance_id = :id AS is_id, instance_id = :bare AS is_bare, instance_id = :unknown AS is_unknown,
       status, correlation_id IS NOT NULL AS has_correlation,
       regexp_replace(error, '\d+', 'N') AS error
FROM flyt_retry_batch(ARRAY[:id, :unknown, :bare, NULL, :id, NULL, :unknown]::bigint[]);
SELECT count(*) AS retry_messages FROM flyt.outbox WHERE event_name = 'instance-requested-for-retry';

-- Empty batch: no rows.  NULL batch and a two-dimensional array: errors.
SELECT * FROM flyt_retry_batch('{}');
SELECT * FROM flyt_retry_batch(NULL);
SELECT * FROM flyt_retry_batch('{{1,2},{3,4}}');

-- An id that fails unexpectedly (here: a trigger refuses its outbox row) is an
-- "error" row, leaves nothing of itself behind and does not stop the others.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.key = current_setting('my.refused', true) THEN
		RAISE EXCEPTION 'refused by test trigger' USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON flyt.outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();
SELECT flyt_register_instance(:'headers', :'instance') AS other \gset
SELECT set_config('my.refused', :'other', false) IS NOT NULL AS armed;
SELECT count(*) AS events_before FROM flyt.instance_event \gset
SELECT instance_id = :id AS is_id, status, correlation_id IS NOT NULL AS has_correlation, error
FROM flyt_retry_batch(ARRAY[:other, :id]);
SELECT count(*) - :events_before AS events_added FROM flyt.instance_event;
SELECT count(*) AS retries_of_refused FROM flyt.instance_event WHERE instance_id = :other AND event_type = 'RETRY_REQUESTED';
DROP TRIGGER refuse ON flyt.outbox;

-- Who asked: the calling role.  The JWT subject counts only for PostgREST's
-- role flyt_web (test/pgtap/api.sql): anyone else could set the claims.
BEGIN;
SELECT set_config('request.jwt.claims', '{"role": "flyt_web", "sub": "forged-client"}', true) IS NOT NULL AS claims_set;
SELECT flyt_retry(:id) IS NOT NULL AS retried;
SELECT requested_by = current_user AS by_current_user FROM flyt_instance_history(:id) ORDER BY version DESC LIMIT 1;
SELECT set_config('request.jwt.claims', '{"role": "flyt_web"}', true) IS NOT NULL AS claims_without_sub;
SELECT flyt_retry(:id) IS NOT NULL AS retried;
SELECT requested_by = current_user AS by_current_user FROM flyt_instance_history(:id) ORDER BY version DESC LIMIT 1;
COMMIT;

-- Versions stay dense per instance.
SELECT array_agg(version ORDER BY version) FROM flyt_instance_history(:id);

-- A batch of 500 ids does not take a subtransaction (and a transaction id)
-- per id: past 64 in one transaction the backend's cache of them overflows
-- and every snapshot in the cluster gets slower.  One unexpected failure
-- still undoes only its own id.
INSERT INTO flyt.instance (payload, flow_headers)
SELECT payload, flow_headers FROM flyt.instance, generate_series(1, 500) WHERE id = :id;
SELECT txid_current() AS xid_before \gset
SELECT status, count(*) FROM flyt_retry_batch(ARRAY(SELECT id FROM flyt.instance WHERE flow_headers IS NOT NULL ORDER BY id))
GROUP BY status;
SELECT txid_current() - :xid_before < 64 AS few_transaction_ids;
CREATE FUNCTION pg_temp.refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.key = (SELECT (max(id) - 7)::text FROM flyt.instance) THEN
		RAISE EXCEPTION 'refused for the test';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_one BEFORE INSERT ON flyt.outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_one();
SELECT txid_current() AS xid_before \gset
SELECT status, error, count(*) FROM flyt_retry_batch(ARRAY(SELECT id FROM flyt.instance WHERE flow_headers IS NOT NULL ORDER BY id))
GROUP BY status, error ORDER BY status;
SELECT txid_current() - :xid_before < 64 AS few_transaction_ids;
DROP TRIGGER refuse_one ON flyt.outbox;

-- Messages are written straight from the stored jsonb, byte for byte what
-- jansson wrote for the same tree (registration and retry alike): escapes,
-- control characters (upper-case \u001F, as jansson), non-ASCII text,
-- nested collections, UUIDs in any case written in lower case, unknown
-- header fields left out.
TRUNCATE flyt.outbox;
SELECT flyt_register_instance(
  '{"sourceApplicationId": 2, "sourceApplicationIntegrationId": "sak\"\\/",
    "sourceApplicationInstanceId": "ÆØÅ \u0001\u001f\t", "integrationId": 17,
    "correlationId": "ABCDEF00-1111-2222-3333-444455556666",
    "fileIds": ["0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9", "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f0"], "x-unknown": [1, 2.5]}',
  '{"valuePerKey": {"a": "\"\\/\b\f\n\r\t\u0001\u001f\u007f", "bb": "æøå 𝄞", "ccc": null},
    "objectCollectionPerKey": {"k": [{"valuePerKey": {"v": "1"}, "objectCollectionPerKey": {}},
                                     {"valuePerKey": {}, "objectCollectionPerKey": {"n": []}}]}}') AS edge_id \gset
SELECT flyt_retry(:edge_id) AS edge_correlation \gset
SELECT g.value = r.value AS same_value,
       replace(r.headers->>'flyt.instance-flow-headers', :'edge_correlation', 'abcdef00-1111-2222-3333-444455556666')
         = g.headers->>'flyt.instance-flow-headers' AS same_headers_but_correlation_id,
       strpos(r.value, '\t\u0001\u001F') > 0 AS upper_case_escapes
FROM flyt.outbox g, flyt.outbox r
WHERE g.event_name = 'instance-registered' AND r.event_name = 'instance-requested-for-retry'
  AND g.key = :'edge_id' AND r.key = :'edge_id';
SELECT r.headers->>'flyt.instance-flow-headers' AS retried_headers
FROM flyt.outbox r WHERE r.event_name = 'instance-requested-for-retry' AND r.key = :'edge_id' \gset
SELECT replace(:'retried_headers', :'edge_correlation', '<new>') AS retried_headers;
-- The value's exact bytes (those jansson wrote for it, compared when the
-- registration's message still went through jansson).
SELECT regexp_replace(value, '"createdAt":"[^"]*"', '"createdAt":"<created>"') AS retried_value
FROM flyt.outbox WHERE event_name = 'instance-requested-for-retry' AND key = :'edge_id';
-- A number only jansson writes right (stored by hand: the consumer quotes
-- them) takes jansson's path: 1.50 is written 1.5, as before.
UPDATE flyt.instance SET payload = '{"valuePerKey": {"a": 1.50, "b": 12}}' WHERE id = :edge_id;
SELECT flyt_retry(:edge_id) IS NOT NULL AS retried;
SELECT value LIKE '%"valuePerKey":{"a":1.5,"b":12}%' AS written_by_jansson
FROM flyt.outbox WHERE key = :'edge_id' ORDER BY id DESC LIMIT 1;
