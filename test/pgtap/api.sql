-- The HTTP surface (schema flyt_api) as PostgREST v12 calls it: this file
-- replays PostgREST's per-request SQL (../shared/POSTGREST.md) and maps
-- SQLSTATEs to HTTP statuses as PostgREST does.  The test cluster runs with
--   flyt_instance.internal_clients = 'flyt-internal-client, flyt-other-client'
--   flyt_instance.authorized_org_id_role_pairs =
--     '{"vigo.no": ["USER"], "fintlabs.no": ["ADMIN"], "ofk.no": []}'
BEGIN;
SELECT plan(56);

TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;
SELECT flyt_register_instance(
	'{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}',
	'{"valuePerKey": {"tittel": "Søknad"}}');							-- id 1
INSERT INTO flyt.instance (payload) VALUES ('{"valuePerKey": {}, "objectCollectionPerKey": {}}');	-- id 2, no flow headers

-- SQLSTATE -> HTTP status, PostgREST's table (anonymous role: 42501 is 401).
CREATE FUNCTION pg_temp.http_status(state text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN state ~ '^PT\d\d\d$' THEN substr(state, 3)::int
		WHEN state = 'P0001' THEN 400
		WHEN state LIKE 'P0%' THEN 500
		WHEN state = '42501' THEN 401
		WHEN state IN ('42883', '42P01', 'PGRST202') THEN 404
		WHEN state IN ('23505', '23503') THEN 409
		WHEN state = '25006' THEN 405
		WHEN state ~ '^(0L|0P|28)' THEN 403
		WHEN state = '57P01' THEN 503
		WHEN state ~ '^(40|54|55|57|XX)' OR state = '53400' THEN 500
		WHEN state ~ '^(53|08)' THEN 503
		ELSE 400
	END
$$;

-- One request: PostgREST's set_config statement, the db-pre-request, the
-- call with named arguments from the JSON body (json_to_record) or the whole
-- body as the unnamed jsonb argument, and the error body on failure.  The
-- request runs in a subtransaction: a failed request leaves nothing.
CREATE FUNCTION pg_temp.request(fn text, token jsonb, body jsonb, OUT status int, OUT response jsonb)
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	det text;
	hnt text;
BEGIN
	BEGIN
		PERFORM set_config('search_path', 'flyt_api, public', true),
				set_config('role', 'flyt_web', true),
				set_config('request.jwt.claims', (coalesce(token, '{}') || '{"role": "flyt_web"}')::text, true),
				set_config('request.method', 'POST', true),
				set_config('request.path', '/rpc/' || fn, true),
				set_config('request.headers', json_build_object('content-type', 'application/json',
					'authorization', CASE WHEN token IS NULL THEN NULL ELSE 'Bearer eyJ...' END)::text, true),
				set_config('request.cookies', '{}', true);
		PERFORM flyt_api.authorize();
		IF fn = 'retry' THEN
			IF jsonb_typeof(body) <> 'object' OR (SELECT array_agg(k) FROM jsonb_object_keys(body) k) <> ARRAY['instance_id'] THEN
				RAISE EXCEPTION 'Could not find the function flyt_api.retry with these arguments' USING ERRCODE = 'PGRST';
			END IF;
			SELECT to_jsonb(flyt_api.retry(instance_id := r.instance_id)) INTO response
			FROM json_to_record(body::json) AS r(instance_id bigint);
		ELSE
			SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') INTO response FROM flyt_api.retry_batch(body) t;
		END IF;
		status := 200;
		PERFORM set_config('role', 'none', true), set_config('search_path', '"$user", public', true);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
		IF state = 'PGRST' THEN
			state := 'PGRST202';
		END IF;
		status := pg_temp.http_status(state);
		response := jsonb_build_object('code', state, 'message', msg, 'details', nullif(det, ''), 'hint', nullif(hnt, ''));
	END;
END
$$;

CREATE TEMP TABLE token (name text PRIMARY KEY, claims jsonb);
INSERT INTO token VALUES
	('none', NULL),
	('internal', '{"sub": "flyt-internal-client", "aud": "flyt"}'),
	('other internal', '{"sub": "flyt-other-client"}'),
	('vigo user', '{"sub": "kari@vigo.no", "organizationid": "vigo.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}'),
	('vigo developer', '{"sub": "ola@vigo.no", "organizationid": "vigo.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/developer/"]}'),
	('vigo unknown role', '{"sub": "per@vigo.no", "organizationid": "vigo.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/reader"]}'),
	('vigo no roles', '{"sub": "anne@vigo.no", "organizationid": "vigo.no"}'),
	('fintlabs user', '{"sub": "kim@fintlabs.no", "organizationid": "fintlabs.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}'),
	('fintlabs admin', '{"sub": "eva@fintlabs.no", "organizationid": "fintlabs.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user", "https://role-catalog.vigoiks.no/vigo/flyt/admin"]}'),
	('ofk developer', '{"sub": "jo@ofk.no", "organizationid": "ofk.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/developer"]}'),
	('unknown org', '{"sub": "x@agder.no", "organizationid": "agderfk.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/developer"]}'),
	('stranger', '{"sub": "some-client"}');

CREATE FUNCTION pg_temp.call(fn text, who text, body jsonb) RETURNS int LANGUAGE sql AS $$
	SELECT (pg_temp.request(fn, (SELECT claims FROM token WHERE name = who), body)).status
$$;
CREATE FUNCTION pg_temp.answer(fn text, who text, body jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT (pg_temp.request(fn, (SELECT claims FROM token WHERE name = who), body)).response
$$;

-- Authentication and authorisation, POST /rpc/retry
SELECT is(pg_temp.call('retry', 'none', '{"instance_id": 1}'), 401, 'retry without a token: 401');
SELECT is(pg_temp.answer('retry', 'none', '{"instance_id": 1}') ->> 'code', 'PT401', 'the 401 says PT401');
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": 1}'), 200, 'internal client: 200');
SELECT is(pg_temp.call('retry', 'other internal', '{"instance_id": 1}'), 200, 'second internal client: 200');
SELECT is(pg_temp.call('retry', 'vigo user', '{"instance_id": 1}'), 200, 'user of an authorised org with USER: 200');
SELECT is(pg_temp.call('retry', 'vigo developer', '{"instance_id": 1}'), 200, 'DEVELOPER implies USER: 200');
SELECT is(pg_temp.call('retry', 'fintlabs admin', '{"instance_id": 1}'), 200, 'ADMIN where the org lists ADMIN: 200');
SELECT is(pg_temp.call('retry', 'fintlabs user', '{"instance_id": 1}'), 403, 'USER where the org lists only ADMIN: 403');
SELECT is(pg_temp.call('retry', 'vigo unknown role', '{"instance_id": 1}'), 403, 'a role outside the catalog ladder: 403');
SELECT is(pg_temp.call('retry', 'vigo no roles', '{"instance_id": 1}'), 403, 'no roles: 403');
SELECT is(pg_temp.call('retry', 'ofk developer', '{"instance_id": 1}'), 403, 'an org listed with no roles: 403');
SELECT is(pg_temp.call('retry', 'unknown org', '{"instance_id": 1}'), 403, 'an org not listed: 403');
SELECT is(pg_temp.call('retry', 'stranger', '{"instance_id": 1}'), 403, 'a client that is not internal: 403');
SELECT is(pg_temp.answer('retry', 'unknown org', '{"instance_id": 1}') ->> 'message', 'organisation agderfk.no is not authorised', '403 names the organisation');
SELECT matches(pg_temp.answer('retry', 'fintlabs user', '{"instance_id": 1}') ->> 'details', 'holds USER.*allows \["ADMIN"\]', '403 names the roles held and allowed');
SELECT matches(pg_temp.answer('retry', 'stranger', '{"instance_id": 1}') ->> 'message', 'neither an internal client', '403 of a stranger says what is missing');
SELECT doesnt_match(pg_temp.answer('retry', 'stranger', '{"instance_id": 1}')::text, 'eyJ', 'no error body repeats the token');

-- Outcomes, POST /rpc/retry
SELECT matches(pg_temp.answer('retry', 'internal', '{"instance_id": 1}') #>> '{}', '^[0-9a-f-]{36}$', '200 body is the new correlation id');
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": 424242}'), 404, 'unknown instance: 404');
SELECT is(pg_temp.answer('retry', 'internal', '{"instance_id": 424242}') ->> 'message', 'instance 424242 not found', '404 says which');
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": 2}'), 500, 'no flow headers: 500');
SELECT is(pg_temp.answer('retry', 'internal', '{"instance_id": 2}') ->> 'code', 'PT500', 'the 500 is PT500');
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": "abc"}'), 400, 'a non-integer id: 400');
SELECT is(pg_temp.call('retry', 'internal', '{"id": 1}'), 404, 'a wrong argument name: 404 (PGRST202)');
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": null}'), 400, 'a null id: 400');

-- An unexpected failure (a trigger refuses the outbox row) is a 500 whose
-- body holds none of its internal text; the server log has it.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'internal secret text';
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON flyt.outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();
SELECT is(pg_temp.call('retry', 'internal', '{"instance_id": 1}'), 500, 'an unexpected failure: 500');
SELECT doesnt_match(pg_temp.answer('retry', 'internal', '{"instance_id": 1}')::text, 'internal secret',
	'the 500 body holds no internal error text');
SELECT is(pg_temp.answer('retry_batch', 'internal', '[1]') -> 0 ->> 'status', 'error', 'the batch row says error');
SELECT doesnt_match(pg_temp.answer('retry_batch', 'internal', '[1]')::text, 'internal secret',
	'the batch row holds no internal error text');
DROP TRIGGER refuse ON flyt.outbox;

-- POST /rpc/retry_batch with the raw JSON array as body
SELECT is(pg_temp.call('retry_batch', 'none', '[1]'), 401, 'batch without a token: 401');
SELECT is(pg_temp.call('retry_batch', 'stranger', '[1]'), 403, 'batch of a stranger: 403');
SELECT is(pg_temp.call('retry_batch', 'vigo user', '[1, 424242, 2, 1]'), 200, 'batch: 200');
SELECT is(
	(SELECT jsonb_agg(jsonb_build_array(e ->> 'instance_id', e ->> 'status')) FROM jsonb_array_elements(pg_temp.answer('retry_batch', 'vigo user', '[1, 424242, 2, 1]')) e),
	'[["1", "queued"], ["424242", "not_found"], ["2", "no_flow_headers"]]'::jsonb,
	'batch: one result per distinct id, in order');
SELECT ok((SELECT bool_and((e ->> 'correlation_id') IS NOT NULL) = true
	FROM jsonb_array_elements(pg_temp.answer('retry_batch', 'internal', '[1]')) e), 'queued results carry the correlation id');
SELECT is(pg_temp.answer('retry_batch', 'internal', '[]'), '[]'::jsonb, 'an empty batch: []');
SELECT is(pg_temp.call('retry_batch', 'internal', '[1, "2"]'), 400, 'a string in the batch: 400');
SELECT is(pg_temp.answer('retry_batch', 'internal', '[1, "2"]') ->> 'details', 'Element 2 is not an integer.', '400 says which element');
SELECT is(pg_temp.call('retry_batch', 'internal', '[1.5]'), 400, 'a fraction: 400');
SELECT is(pg_temp.call('retry_batch', 'internal', '[null]'), 400, 'a null: 400');
SELECT is(pg_temp.call('retry_batch', 'internal', '[99999999999999999999]'), 400, 'out of bigint range: 400');
SELECT is(pg_temp.call('retry_batch', 'internal', '{"ids": [1]}'), 400, 'an object body: 400');
SELECT is(pg_temp.answer('retry_batch', 'internal', '{"ids": [1]}') ->> 'message',
	'the request body must be a JSON array of instance ids (integers)', '400 says what the body must be');
SELECT is(pg_temp.call('retry_batch', 'internal', '5'), 400, 'a scalar body: 400');

-- Who asked: the JWT subject.
SELECT is((SELECT requested_by FROM flyt_instance_history(1) ORDER BY version DESC LIMIT 1), 'flyt-internal-client',
	'the history records the token subject as who asked');
-- kari@vigo.no retried instance 1 once alone and twice in a batch
SELECT is((SELECT count(*) FROM flyt_instance_history(1) WHERE requested_by = 'kari@vigo.no'), 3::bigint,
	'a user''s retries are recorded with the user''s subject');

-- Privileges: flyt_web reaches flyt_api and nothing else.
SELECT ok(has_schema_privilege('flyt_web', 'flyt_api', 'USAGE'), 'flyt_web uses flyt_api');
SELECT ok(NOT has_schema_privilege('flyt_web', 'flyt', 'USAGE'), 'flyt_web cannot use schema flyt');
SELECT ok(NOT has_table_privilege('flyt_web', 'flyt.instance', 'SELECT')
	AND NOT has_table_privilege('flyt_web', 'flyt.outbox', 'INSERT'), 'flyt_web has no table privileges');
SELECT ok(NOT has_function_privilege('flyt_web', 'flyt_retry(bigint)', 'EXECUTE'), 'flyt_web cannot call flyt_retry directly');
SELECT is((SELECT count(*) FROM pg_proc WHERE pronamespace = 'flyt_api'::regnamespace
	AND NOT has_function_privilege('flyt_web', oid, 'EXECUTE')), 0::bigint, 'flyt_web executes every flyt_api function');
SELECT is((SELECT count(*) FROM pg_proc WHERE pronamespace = 'flyt_api'::regnamespace
	AND has_function_privilege('public', oid, 'EXECUTE')), 0::bigint, 'PUBLIC executes no flyt_api function');
SELECT is((SELECT count(*) FROM (SELECT proname FROM pg_proc WHERE pronamespace = 'flyt_api'::regnamespace
	GROUP BY proname HAVING count(*) > 1) o), 0::bigint, 'no flyt_api function is overloaded');
SELECT is((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'flyt_web'), false, 'flyt_web cannot log in');

-- OpenAPI: the schema and every function have a comment whose first line is a summary.
SELECT ok(split_part(obj_description('flyt_api'::regnamespace, 'pg_namespace'), E'\n', 1) <> '', 'flyt_api has a title');
SELECT is((SELECT count(*) FROM pg_proc WHERE pronamespace = 'flyt_api'::regnamespace
	AND coalesce(split_part(obj_description(oid, 'pg_proc'), E'\n', 1), '') = ''), 0::bigint,
	'every flyt_api function has a summary');
SELECT is((SELECT count(*) FROM pg_proc WHERE pronamespace = 'flyt_api'::regnamespace AND prosecdef
	AND NOT coalesce(array_to_string(proconfig, ',') LIKE '%search_path=%', false)), 0::bigint,
	'every SECURITY DEFINER flyt_api function pins search_path');

SELECT * FROM finish();
ROLLBACK;
