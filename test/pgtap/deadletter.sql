-- Dead letters an operator can act on (issue 15): flyt_dead_letters,
-- flyt_dead_letter_redrive, flyt_dead_letter_discard, and the admin API
-- (flyt_api.dead_letters, dead_letter_redrive, dead_letter_discard) with
-- its authorisation: ROLE_ADMIN after the organisation filter and the
-- hierarchy (INTEROP.md 6), simulated as test/pgtap/api.sql does.
\set pairs '{"afk.no": ["USER"], "vigo.no": ["DEVELOPER", "USER"], "admins.example": ["ADMIN"], "developers.example": ["DEVELOPER"]}'
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = :'pairs';
SELECT pg_reload_conf() AS reloaded \gset
SELECT pg_sleep(0.2) AS slept \gset
SELECT current_setting('flyt_instance.authorized_org_id_role_pairs') = :'pairs' AS in_force \gset
\if :in_force
\else
SELECT pg_sleep(2) AS slept \gset
\endif

BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(97);

SELECT is(current_setting('flyt_instance.authorized_org_id_role_pairs'), :'pairs', 'the test''s role pairs are in force');
TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox, flyt.dead_letter, flyt.dead_letter_action RESTART IDENTITY CASCADE;

\set flow '{"sourceApplicationId":2,"correlationId":"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11","sourceApplicationIntegrationId":"sak","sourceApplicationInstanceId":"ACOS-1","fileIds":[],"integrationId":17,"instanceId":null,"configurationId":null,"archiveInstanceId":null}'
\set value '{"valuePerKey":{"tittel":"Søknad om skoleskyss"},"objectCollectionPerKey":{}}'

-- The pump's dead letter of an outbox row (its statement in pump.c).
CREATE FUNCTION pg_temp.kill_outbox_row(ob bigint, error text) RETURNS bigint LANGUAGE sql AS $$
	WITH d AS (DELETE FROM flyt.outbox WHERE id = ob RETURNING *)
	INSERT INTO flyt.dead_letter (topic, outbox_id, original_message_id, message_key, headers,
		original_message_payload, failure_transience, message_delivery_attempts, failure_details)
	SELECT topic, id, 'outbox/' || id, convert_to(key, 'UTF8'), headers, convert_to(value, 'UTF8'),
		'TRANSIENT', 3, jsonb_build_object('errorMessage', error, 'event', event_name)
	FROM d RETURNING id
$$;
-- The consumer's dead letter of a consumed message (its statement in consumer.c).
CREATE FUNCTION pg_temp.consumed(topic text, off bigint, headers jsonb, value text, sqlstate text DEFAULT '22023')
RETURNS bigint LANGUAGE sql AS $$
	INSERT INTO flyt.dead_letter (topic, kafka_partition, kafka_offset, original_message_id, message_key,
		headers, original_message_payload, failure_transience, message_delivery_attempts, failure_details)
	VALUES (topic, 0, off, topic || '/0/' || off, convert_to('ACOS-1', 'UTF8'), headers, convert_to(value, 'UTF8'),
		'PERMANENT', 1, jsonb_build_object('errorMessage', 'first failure', 'sqlstate', sqlstate))
	RETURNING id
$$;

-- 1. An outbox message that died (instance-registered of instance 1).
SELECT flyt_register_instance(:'flow', :'value') AS i1 \gset
SELECT id AS ob1, headers AS ob1_headers, value AS ob1_value, key AS ob1_key, topic AS ob1_topic
	FROM flyt.outbox WHERE key = :'i1' \gset
SELECT pg_temp.kill_outbox_row(:ob1, 'Broker: Message size too large') AS dl1 \gset
SELECT flyt_register_instance(:'flow', :'value') AS i2 \gset

SELECT is((SELECT dead_letter_status || ' ' || origin || ' ' || event_name || ' ' || event_id || ' ' || error_message
	FROM flyt_dead_letters() WHERE id = :dl1),
	'dead outbox instance-registered ' || (:'ob1_headers'::jsonb ->> 'flyt.event-id') || ' Broker: Message size too large',
	'flyt_dead_letters lists it: dead, outbox, its event and flyt.event-id, the error');
SELECT ok((SELECT headers IS NULL AND payload IS NULL AND message_key IS NULL AND failure_details IS NULL
	FROM flyt_dead_letters() WHERE id = :dl1), 'without with_payload: no key, headers, value or details');
SELECT is((SELECT payload FROM flyt_dead_letters(with_payload => true) WHERE id = :dl1), :'ob1_value',
	'with_payload => true: the value as text');

SELECT is(flyt_dead_letter_redrive(:dl1), 'redriven', 'redrive of an outbox dead letter: redriven');
SELECT is((SELECT count(*) FROM flyt.outbox WHERE headers = :'ob1_headers'::jsonb), 1::bigint,
	'it is queued again with its headers: the same flyt.event-id');
SELECT ok((SELECT value = :'ob1_value' AND key = :'ob1_key' AND topic = :'ob1_topic' AND event_name = 'instance-registered'
	AND attempts = 0 FROM flyt.outbox WHERE headers = :'ob1_headers'::jsonb), '... with its value, key, topic and event name, attempts 0');
SELECT ok((SELECT id > (SELECT max(id) FROM flyt.outbox WHERE key = :'i2') FROM flyt.outbox WHERE headers = :'ob1_headers'::jsonb),
	'... under a new id, after every row already queued');
SELECT ok((SELECT status = 'redriven' AND resolved_by = current_user AND resolved_at IS NOT NULL
	FROM flyt.dead_letter WHERE id = :dl1), 'the dead letter is redriven, with who and when');
SELECT is((SELECT action || ' ' || acted_by || ' ' || (outbox_id = (SELECT id FROM flyt.outbox WHERE headers = :'ob1_headers'::jsonb))::text || ' ' || instance_id
	FROM flyt.dead_letter_action WHERE dead_letter_id = :dl1), 'redriven ' || current_user || ' true ' || :i1,
	'an action row: redriven, by whom, the new outbox row, the instance');
SELECT is((SELECT event_type || ' ' || requested_by || ' ' || (detail ->> 'dead_letter_id') FROM flyt_instance_history(:i1) ORDER BY version DESC LIMIT 1),
	'REDRIVEN ' || current_user || ' ' || :dl1, 'the instance history records REDRIVEN');
SELECT is(flyt_dead_letter_redrive(:dl1), 'already_redriven', 'a second redrive: already_redriven');
SELECT is((SELECT count(*) FROM flyt.outbox WHERE headers = :'ob1_headers'::jsonb), 1::bigint, '... which queues nothing');
SELECT is(flyt_dead_letter_discard(:dl1), 'already_redriven', 'a discard after the redrive: already_redriven');
SELECT is((SELECT redrives FROM flyt_dead_letters() WHERE id = :dl1), 1, 'flyt_dead_letters counts one redrive');

-- 2. A consumed instance-received that can be applied now.
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 10,
	jsonb_build_object('flyt.instance-flow-headers', :'flow', 'flyt.event-id', 'e-10'), :'value', '54000') AS dl2 \gset
SELECT max(id) AS before_max FROM flyt.instance \gset
SELECT is(flyt_dead_letter_redrive(:dl2), 'redriven', 'redrive of a consumed instance-received: redriven');
SELECT is((SELECT count(*) FROM flyt.instance WHERE id > :before_max), 1::bigint, 'the instance is registered once');
SELECT max(id) AS i3 FROM flyt.instance \gset
SELECT is((SELECT payload FROM flyt.instance WHERE id = :i3), (:'value')::jsonb, '... with the message''s value');
SELECT is((SELECT string_agg(event_type, ' ' ORDER BY version) FROM flyt_instance_history(:i3)), 'REGISTERED REDRIVEN',
	'its history: REGISTERED, then REDRIVEN');
SELECT is((SELECT (detail ->> 'offset') || ' ' || (detail ->> 'topic') FROM flyt_instance_history(:i3) WHERE event_type = 'REDRIVEN'),
	'10 fintlabs-no.flyt.event.instance-received', 'REDRIVEN keeps the topic and offset for the record');
SELECT is((SELECT count(*) FROM flyt.outbox WHERE key = :'i3' AND event_name = 'instance-registered'), 1::bigint,
	'instance-registered is queued, as the consumer would');
SELECT is((SELECT kafka_offset FROM flyt.dead_letter WHERE id = :dl2), 10::bigint, 'the dead letter keeps its offset');
SELECT is((SELECT instance_id FROM flyt.dead_letter_action WHERE dead_letter_id = :dl2), :i3::bigint, 'the action names the registered instance');
SELECT is(flyt_dead_letter_redrive(:dl2), 'already_redriven', 'twice: already_redriven');
SELECT is((SELECT count(*) FROM flyt.instance WHERE id > :before_max), 1::bigint, '... and nothing is registered twice');

-- 3. A bad consumed message: fails again and stays dead with the new reason.
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 11,
	jsonb_build_object('flyt.instance-flow-headers', :'flow'), '{"valuePerKey": {"navn": {"x": 1}}}') AS dl3 \gset
SELECT count(*) AS errors_before FROM flyt.outbox WHERE event_name = 'instance-registration-error' \gset
SELECT is(flyt_dead_letter_redrive(:dl3), 'failed', 'redrive of a bad message: failed');
SELECT is((SELECT status FROM flyt.dead_letter WHERE id = :dl3), 'dead', 'it stays dead');
SELECT is((SELECT failure_details ->> 'errorMessage' FROM flyt.dead_letter WHERE id = :dl3), 'valuePerKey.navn must be a string',
	'with the new reason');
SELECT is((SELECT failure_details ->> 'sqlstate' FROM flyt.dead_letter WHERE id = :dl3), '22023', '... and its SQLSTATE');
SELECT is((SELECT message_delivery_attempts FROM flyt.dead_letter WHERE id = :dl3), 2, 'the attempts count the redrive');
SELECT is((SELECT action || ' ' || (replaced_failure_details ->> 'errorMessage') || ' / ' || (failure_details ->> 'errorMessage')
	FROM flyt.dead_letter_action WHERE dead_letter_id = :dl3), 'redrive_failed first failure / valuePerKey.navn must be a string',
	'the action row keeps the reason it replaced');
SELECT is((SELECT count(*) FROM flyt.outbox WHERE event_name = 'instance-registration-error'), :errors_before + 1::bigint,
	'instance-registration-error is queued, as the consumer does');
SELECT is((SELECT count(*) FROM flyt.instance WHERE id > :i3), 0::bigint, 'no instance is registered');
SELECT is(flyt_dead_letter_redrive(:dl3), 'failed', 'a second redrive fails again');
SELECT is((SELECT count(*) FROM flyt.dead_letter_action WHERE dead_letter_id = :dl3), 2::bigint, '... and is recorded too');
SELECT is((SELECT redrives FROM flyt_dead_letters() WHERE id = :dl3), 2, 'flyt_dead_letters counts both redrives');

-- 4. instance-dispatched, replies, content not recorded.
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-dispatched', 12,
	jsonb_build_object('flyt.instance-flow-headers', jsonb_set(:'flow'::jsonb, '{instanceId}', to_jsonb(:i2::bigint))::text), NULL) AS dl4 \gset
SELECT is(flyt_dead_letter_redrive(:dl4), 'redriven', 'redrive of a consumed instance-dispatched: redriven');
SELECT is((SELECT count(*) FROM flyt.instance WHERE id = :i2), 0::bigint, 'the instance is deleted');
SELECT is((SELECT string_agg(event_type, ' ' ORDER BY version) FROM flyt_instance_history(:i2)), 'REGISTERED DISPATCHED DELETED REDRIVEN',
	'its history: DISPATCHED, DELETED, REDRIVEN');
SELECT pg_temp.consumed('fintlabs-no.flyt.reply.fint-flyt-instance-service.instance-flow-headers-for-registered-instance', 13,
	'{}', 'null') AS dl5 \gset
SELECT is(flyt_dead_letter_redrive(:dl5), 'not_redrivable', 'a reply is nothing to redrive');
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 14, NULL, NULL) AS dl6 \gset
SELECT is(flyt_dead_letter_redrive(:dl6), 'not_redrivable', 'a message whose content was not recorded: not_redrivable');
SELECT is((SELECT status FROM flyt.dead_letter WHERE id IN (:dl5, :dl6) GROUP BY status), 'dead', 'both stay dead');

-- 5. Discard.
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 15,
	jsonb_build_object('flyt.instance-flow-headers', :'flow'), 'not json') AS dl7 \gset
SELECT is(flyt_dead_letter_discard(:dl7), 'discarded', 'discard: discarded');
SELECT ok((SELECT status = 'discarded' AND resolved_by = current_user AND resolved_at = now()
	FROM flyt.dead_letter WHERE id = :dl7), 'recorded with who and when');
SELECT is((SELECT action || ' ' || acted_by FROM flyt.dead_letter_action WHERE dead_letter_id = :dl7), 'discarded ' || current_user,
	'an action row: discarded, by whom');
SELECT is(flyt_dead_letter_discard(:dl7), 'already_discarded', 'twice: already_discarded');
SELECT is(flyt_dead_letter_redrive(:dl7), 'already_discarded', 'a redrive after the discard does nothing');
SELECT is((SELECT payload FROM flyt_dead_letters(with_payload => true) WHERE id = :dl7), 'not json', 'a discarded row is kept');

-- 6. Filters, errors.
SELECT is((SELECT array_agg(id ORDER BY id) FROM flyt_dead_letters(status => 'dead')), ARRAY[:dl3, :dl5, :dl6]::bigint[],
	'status => dead: only what is still dead');
SELECT is((SELECT array_agg(id ORDER BY id) FROM flyt_dead_letters(topic => 'fintlabs-no.flyt.event.instance-dispatched')),
	ARRAY[:dl4]::bigint[], 'topic filter');
SELECT is((SELECT array_agg(id ORDER BY id) FROM flyt_dead_letters(sqlstate => '54000')), ARRAY[:dl2]::bigint[], 'sqlstate filter');
SELECT is((SELECT array_agg(id ORDER BY id) FROM flyt_dead_letters(transience => 'transient')), ARRAY[:dl1]::bigint[],
	'transience filter, in any case');
SELECT is((SELECT count(*) FROM flyt_dead_letters(since => now() + interval '1 second')), 0::bigint, 'since filter');
SELECT is((SELECT count(*) FROM flyt_dead_letters(until => now() + interval '1 second')), 7::bigint, 'until filter');
SELECT is((SELECT array_agg(id) FROM flyt_dead_letters(max_rows => 2)), ARRAY[:dl7, :dl6]::bigint[], 'newest first, max_rows');
SELECT throws_ok($$SELECT * FROM flyt_dead_letters(sqlstate => 'abc')$$, '22023', 'sqlstate must be five digits or upper-case letters', 'a bad sqlstate');
SELECT throws_ok($$SELECT * FROM flyt_dead_letters(transience => 'sometimes')$$, '22023', 'transience must be TRANSIENT or PERMANENT', 'a bad transience');
SELECT throws_ok($$SELECT * FROM flyt_dead_letters(status => 'alive')$$, '22023', 'status must be dead, redriven or discarded', 'a bad status');
SELECT throws_ok($$SELECT * FROM flyt_dead_letters(max_rows => 0)$$, '22023', 'max_rows must be between 1 and 10000', 'max_rows 0');
SELECT throws_ok($$SELECT * FROM flyt_dead_letters(since => now(), until => now())$$, '22023', 'since must be before until', 'an empty range');
SELECT throws_ok($$SELECT flyt_dead_letter_redrive(424242)$$, 'P0002', 'dead letter 424242 not found', 'unknown id: P0002');
SELECT throws_ok($$SELECT flyt_dead_letter_discard(NULL::bigint)$$, '22004', 'id must not be null', 'NULL id: 22004');

-- 7. The bulk forms: what is dead and matches, oldest first.
SELECT flyt_register_instance(:'flow', :'value') AS i4 \gset
SELECT flyt_instance_dispatched(jsonb_set(:'flow'::jsonb, '{instanceId}', to_jsonb(:i4::bigint))) AS gone \gset
SELECT count(pg_temp.kill_outbox_row(id, 'Broker: Message size too large')) AS killed
	FROM (SELECT id FROM flyt.outbox WHERE key = :'i4' ORDER BY id) o \gset
SELECT is(flyt_dead_letter_redrive(topic => 'fintlabs-no.flyt.event.instance-registered'), 1::bigint,
	'bulk redrive by topic: 1 redriven');
SELECT is(flyt_dead_letter_redrive(sqlstate => '22023'), 0::bigint, 'bulk redrive of messages that fail again: 0 redriven');
SELECT is(flyt_dead_letter_redrive(), 1::bigint, 'bulk redrive without a filter: the rest that can be');
SELECT is((SELECT string_agg(event_name, ' ' ORDER BY id) FROM flyt.outbox WHERE key = :'i4'), 'instance-registered instance-deleted',
	'an instance''s outbox messages are queued again in their order');
SELECT is(flyt_dead_letter_discard(topic => 'fintlabs-no.flyt.event.instance-received'), 2::bigint, 'bulk discard by topic');
SELECT is((SELECT count(*) FROM flyt.dead_letter WHERE status = 'dead'), 1::bigint, 'only the reply is left dead');

-- 8. Metrics and status.
SELECT matches(flyt_metrics(), 'flyt_instance_dead_letters_by_reason\{topic="fintlabs-no\.flyt\.reply\.[^"]*",reason="22023"\} 1',
	'metrics: dead letters by topic and reason');
SELECT matches(flyt_metrics(), E'\nflyt_instance_dead_letters_redriven_total 5\n', 'metrics: redriven counter');
SELECT matches(flyt_metrics(), E'\nflyt_instance_dead_letters_discarded_total 3\n', 'metrics: discarded counter');
SELECT matches(flyt_metrics(), E'\nflyt_instance_dead_letters_redrive_failed_total 4\n', 'metrics: failed redrives');
SELECT matches(flyt_metrics(), E'\nflyt_instance_dead_letters 1\n', 'metrics: flyt_instance_dead_letters counts what is still dead');
SELECT is((flyt_status() -> 'dead_letter_actions') - 'by_topic_and_reason'::text,
	'{"dead": 1, "redriven": 5, "redrive_failed": 4, "discarded": 3}'::jsonb, 'status: dead, redriven, failed, discarded');

-- 9. HTTP: PostgREST's per-request SQL (as api.sql), then the admin function.
CREATE FUNCTION pg_temp.request(fn text, token jsonb, dl bigint, OUT status int, OUT state text, OUT response jsonb)
LANGUAGE plpgsql AS $$
DECLARE
	msg text;
BEGIN
	BEGIN
		PERFORM set_config('search_path', 'flyt_api, public', true),
				set_config('role', 'flyt_web', true),
				set_config('request.jwt.claims', (coalesce(token, '{}') || '{"role": "flyt_web"}')::text, true);
		PERFORM flyt_api.authorize();
		IF fn = 'dead_letters' THEN
			SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') INTO response FROM flyt_api.dead_letters(max_rows => 1000) t;
		ELSIF fn = 'dead_letter_redrive' THEN
			response := to_jsonb(flyt_api.dead_letter_redrive(id := dl));
		ELSE
			response := to_jsonb(flyt_api.dead_letter_discard(id := dl));
		END IF;
		status := 200;
		state := '00000';
		PERFORM set_config('role', 'none', true), set_config('search_path', '"$user", public', true);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		status := CASE WHEN state ~ '^PT\d\d\d$' THEN substr(state, 3)::int WHEN state LIKE 'P0%' THEN 500 ELSE 400 END;
		response := jsonb_build_object('code', state, 'message', msg);
	END;
END
$$;
CREATE FUNCTION pg_temp.user_token(sub text, org text, VARIADIC roles text[] DEFAULT '{}') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('sub', sub, 'organizationid', org, 'objectidentifier', md5(sub)::uuid,
		'roles', coalesce((SELECT jsonb_agg('https://role-catalog.vigoiks.no/vigo/flyt/' || r) FROM unnest(roles) r), '[]'))
$$;
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 20,
	jsonb_build_object('flyt.instance-flow-headers', :'flow'), 'bad') AS h0 \gset
SELECT pg_temp.consumed('fintlabs-no.flyt.event.instance-received', 21,
	jsonb_build_object('flyt.instance-flow-headers', :'flow'), 'bad') AS h1 \gset

SELECT is((pg_temp.request(fn, claims, :h0)).status, expected, fn || ': ' || description)
FROM (VALUES
	(NULL::jsonb, 401, 'no token'),
	('{"sub": "client"}'::jsonb, 401, 'no user claims'),
	(pg_temp.user_token('kari@afk.no', 'afk.no', 'user'), 403, 'USER only: 403 (the admin API needs ADMIN)'),
	(pg_temp.user_token('per@afk.no', 'afk.no', 'admin'), 403, 'ADMIN of an organisation listing only USER: 403 (the filter first)'),
	(pg_temp.user_token('ola@vigo.no', 'vigo.no', 'user'), 403, 'USER of an organisation listing DEVELOPER and USER: 403'),
	(pg_temp.user_token('eva@admins.example', 'admins.example', 'admin'), 200, 'ADMIN of an organisation listing ADMIN: allowed'),
	(pg_temp.user_token('jo@developers.example', 'developers.example', 'developer'), 200, 'DEVELOPER of an organisation listing DEVELOPER: allowed (DEVELOPER implies ADMIN)')
) AS m(claims, expected, description), (VALUES ('dead_letters'), ('dead_letter_discard')) AS f(fn)
ORDER BY fn DESC, expected, description;
SELECT is((pg_temp.request('dead_letter_redrive', pg_temp.user_token('ola@vigo.no', 'vigo.no', 'developer'), :h1)).response,
	'"failed"', 'a DEVELOPER of vigo.no redrives: 200, the outcome');
SELECT is((SELECT acted_by FROM flyt.dead_letter_action WHERE dead_letter_id = :h1 ORDER BY id DESC LIMIT 1), 'ola@vigo.no',
	'the action is recorded with the token''s subject');
SELECT is((pg_temp.request('dead_letter_redrive', pg_temp.user_token('kari@afk.no', 'afk.no', 'user'), :h1)).status, 403,
	'a USER cannot redrive: 403');
SELECT is((pg_temp.request('dead_letter_redrive', pg_temp.user_token('kari@afk.no', 'afk.no', 'user'), :h1)).response ->> 'message',
	'the token has no role that organisation afk.no authorises', '... with the organisation named');
SELECT is((pg_temp.request('dead_letter_redrive', pg_temp.user_token('eva@admins.example', 'admins.example', 'admin'), 424242)).status, 404,
	'unknown dead letter: 404');
SELECT is((pg_temp.request('dead_letter_discard', pg_temp.user_token('eva@admins.example', 'admins.example', 'admin'), :h1)).response,
	'"discarded"', 'an ADMIN discards: 200, the outcome');
SELECT is((SELECT resolved_by FROM flyt.dead_letter WHERE id = :h1), 'eva@admins.example',
	'the discard is recorded with the subject of the token that made it');
SELECT ok((SELECT bool_and(e -> 'payload' = 'null' AND e -> 'headers' = 'null')
	FROM jsonb_array_elements((pg_temp.request('dead_letters', pg_temp.user_token('eva@admins.example', 'admins.example', 'admin'), 0)).response) e),
	'the HTTP list holds no payload by default');
SELECT ok(NOT has_function_privilege('flyt_web', 'flyt_dead_letter_redrive(bigint)', 'EXECUTE'),
	'flyt_web cannot call flyt_dead_letter_redrive directly');

SELECT * FROM finish();
ROLLBACK;

ALTER SYSTEM RESET flyt_instance.authorized_org_id_role_pairs;
SELECT pg_reload_conf() AS reloaded \gset
