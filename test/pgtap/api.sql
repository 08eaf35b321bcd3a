-- The HTTP surface (schema flyt_api) as PostgREST v12 calls it: this file
-- replays the SQL PostgREST runs for each request (transaction, role,
-- request.jwt.claims, db-pre-request) and maps SQLSTATEs to HTTP statuses
-- as PostgREST does.
--
-- Authorisation is the original resource server's (INTEROP.md section 6):
-- user tokens with organizationid, objectidentifier and roles; the roles
-- that authorized_org_id_role_pairs lists for the organisation are kept,
-- then DEVELOPER implies ADMIN implies USER, and the API needs USER.
--
-- The file sets flyt_instance.authorized_org_id_role_pairs itself (a
-- server-wide setting: ALTER SYSTEM and a reload, reset at the end): what
-- the overlays render for namespace afk-no, plus three test organisations
-- that list only ADMIN, only DEVELOPER, and nothing.  Each organisation is
-- decided by its own entry alone, so afk-no's organisations behave here as
-- in production.
\set afk_pairs '{"afk.no": ["USER"], "viken.no": ["USER"], "frid-iks.no": ["USER"], "vigo.no": ["DEVELOPER", "USER"], "novari.no": ["DEVELOPER", "USER"]}'
\set pairs '{"afk.no": ["USER"], "viken.no": ["USER"], "frid-iks.no": ["USER"], "vigo.no": ["DEVELOPER", "USER"], "novari.no": ["DEVELOPER", "USER"], "admins.example": ["ADMIN"], "developers.example": ["DEVELOPER"], "nobody.example": []}'
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = :'pairs';
SELECT pg_reload_conf() AS reloaded \gset
-- This session takes the new value before its next statement once the
-- reload signal has arrived.
SELECT pg_sleep(0.2) AS slept \gset
SELECT current_setting('flyt_instance.authorized_org_id_role_pairs') = :'pairs' AS in_force \gset
\if :in_force
\else
SELECT pg_sleep(2) AS slept \gset
\endif

BEGIN;
SELECT plan(107);

SELECT is(current_setting('flyt_instance.authorized_org_id_role_pairs'), :'pairs', 'the test''s role pairs are in force');

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
-- state is the SQLSTATE, 00000 on success.
CREATE FUNCTION pg_temp.request(fn text, token jsonb, body jsonb, OUT status int, OUT state text, OUT response jsonb)
LANGUAGE plpgsql AS $$
DECLARE
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
		state := '00000';
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

-- A user's token as FINT's identity provider issues it; roles are given by
-- their last segment (user, admin, developer) or as whole URLs.
CREATE FUNCTION pg_temp.user_token(sub text, org text, VARIADIC roles text[] DEFAULT '{}') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('sub', sub, 'organizationid', org,
		'objectidentifier', md5(sub)::uuid,
		'roles', coalesce((SELECT jsonb_agg(CASE WHEN r LIKE '%/%' THEN r
			ELSE 'https://role-catalog.vigoiks.no/vigo/flyt/' || r END) FROM unnest(roles) r), '[]'))
$$;

CREATE TEMP TABLE token (name text PRIMARY KEY, claims jsonb);
INSERT INTO token VALUES
	('none', NULL),
	('afk user', pg_temp.user_token('kari@afk.no', 'afk.no', 'user')),
	('vigo developer', pg_temp.user_token('ola@vigo.no', 'vigo.no', 'developer')),
	('former internal client', '{"sub": "flyt-internal-client", "aud": "flyt"}');

CREATE FUNCTION pg_temp.call(fn text, who text, body jsonb) RETURNS int LANGUAGE sql AS $$
	SELECT (pg_temp.request(fn, (SELECT claims FROM token WHERE name = who), body)).status
$$;
CREATE FUNCTION pg_temp.answer(fn text, who text, body jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT (pg_temp.request(fn, (SELECT claims FROM token WHERE name = who), body)).response
$$;
-- The SQLSTATE of an otherwise harmless request (an empty batch) with these
-- claims: 00000 when allowed, PT401 or PT403 when not.
CREATE FUNCTION pg_temp.auth(claims jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT (pg_temp.request('retry_batch', claims, '[]')).state
$$;
CREATE FUNCTION pg_temp.auth_error(claims jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT (pg_temp.request('retry_batch', claims, '[]')).response
$$;

-- The authorisation matrix (INTEROP.md 6.2-6.5), by SQLSTATE.
SELECT is(pg_temp.auth(claims), expected, description)
FROM (VALUES
	(1, NULL::jsonb, 'PT401', 'no token: 401'),
	(2, '{"sub": "kari@afk.no", "objectidentifier": "4f1c2c1e-8d6a-4b8e-9d55-0e6f1b2a3c4d", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}',
		'PT401', 'no organizationid: 401'),
	(3, '{"sub": "kari@afk.no", "organizationid": "afk.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}',
		'PT401', 'no objectidentifier: 401'),
	(4, pg_temp.user_token('kari@afk.no', '', 'user'), 'PT401', 'an empty organizationid: 401'),
	(5, pg_temp.user_token('kari@afk.no', ' 	', 'user'), 'PT401', 'a blank organizationid: 401'),
	(6, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') || '{"objectidentifier": ""}', 'PT401', 'an empty objectidentifier: 401'),
	(7, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') || '{"objectidentifier": "  "}', 'PT401', 'a blank objectidentifier: 401'),
	(8, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') || '{"organizationid": null}', 'PT401', 'a null organizationid: 401'),
	(9, '{"sub": "flyt-internal-client", "aud": "flyt"}', 'PT401', 'the subject of a former internal client, without org claims: 401'),
	(10, '{"sub": "flyt-internal-client", "organizationid": "afk.no", "roles": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}',
		'PT401', 'a client with org and roles but no objectidentifier: 401'),
	(11, pg_temp.user_token('x@agderfk.no', 'agderfk.no', 'user', 'admin', 'developer'), 'PT403', 'an organisation not in the pairs: 403'),
	(12, pg_temp.user_token('kari@afk.no', 'afk.no', 'user'), '00000', 'USER for an organisation listing USER: allowed'),
	(13, pg_temp.user_token('per@afk.no', 'afk.no', 'developer'), 'PT403', 'DEVELOPER only, organisation listing only USER: 403 (the filter comes first)'),
	(14, pg_temp.user_token('ola@vigo.no', 'vigo.no', 'developer'), '00000', 'DEVELOPER, organisation listing DEVELOPER: allowed'),
	(15, pg_temp.user_token('jo@developers.example', 'developers.example', 'developer'), '00000',
		'DEVELOPER, organisation listing only DEVELOPER: allowed (DEVELOPER implies ADMIN implies USER)'),
	(16, pg_temp.user_token('liv@developers.example', 'developers.example', 'user'), 'PT403', 'USER, organisation listing only DEVELOPER: 403 (USER implies nothing)'),
	(17, pg_temp.user_token('eva@afk.no', 'afk.no', 'admin'), 'PT403', 'ADMIN only, organisation listing only USER: 403'),
	(18, pg_temp.user_token('eva@admins.example', 'admins.example', 'admin'), '00000', 'ADMIN, organisation listing ADMIN: allowed'),
	(19, pg_temp.user_token('dag@admins.example', 'admins.example', 'developer'), 'PT403', 'DEVELOPER only, organisation listing only ADMIN: 403 (the filter comes first)'),
	(20, pg_temp.user_token('siv@admins.example', 'admins.example', 'developer', 'admin'), '00000', 'DEVELOPER and ADMIN, organisation listing only ADMIN: allowed'),
	(21, pg_temp.user_token('per@afk.no', 'afk.no', 'developer', 'user'), '00000', 'DEVELOPER and USER, organisation listing only USER: allowed'),
	(22, pg_temp.user_token('bo@nobody.example', 'nobody.example', 'user', 'admin', 'developer'), 'PT403', 'an organisation listed with no role: 403'),
	(23, pg_temp.user_token('kari@afk.no', 'afk.no', 'https://role-catalog.vigoiks.no/vigo/other/user'), 'PT403', 'the user role of another application: 403'),
	(24, pg_temp.user_token('kari@afk.no', 'afk.no', 'http://role-catalog.vigoiks.no/vigo/flyt/user'), 'PT403', 'http:// instead of https://: 403'),
	(25, pg_temp.user_token('kari@afk.no', 'afk.no', 'https://role-catalog.vigoiks.no/vigo/flyt/user/'), 'PT403', 'a trailing slash: 403'),
	(26, pg_temp.user_token('kari@afk.no', 'afk.no', 'https://role-catalog.vigoiks.no/vigo/flyt/USER'), 'PT403', 'another case: 403'),
	(27, pg_temp.user_token('kari@afk.no', 'afk.no', 'USER'), 'PT403', 'a bare role name: 403'),
	(28, pg_temp.user_token('kari@afk.no', 'afk.no', 'https://role-catalog.vigoiks.no/vigo/other/user', 'user'), '00000', 'unknown role values are dropped, the known ones count'),
	(29, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') - 'roles', 'PT403', 'no roles claim: 403'),
	(30, pg_temp.user_token('kari@afk.no', 'afk.no'), 'PT403', 'an empty roles claim: 403'),
	(31, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') || '{"roles": "https://role-catalog.vigoiks.no/vigo/flyt/user"}', 'PT403', 'a roles claim that is not an array: 403'),
	(32, pg_temp.user_token('kari@afk.no', 'AFK.NO', 'user'), 'PT403', 'organisation ids are compared exactly: 403'),
	(33, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') || '{"objectidentifier": "kari"}', '00000', 'an objectidentifier that is not a UUID: allowed, as HEAD'),
	(34, pg_temp.user_token('kari@afk.no', 'afk.no', 'user') - 'sub', '00000', 'no subject: allowed (the subject plays no part)')
) AS matrix(n, claims, expected, description)
ORDER BY n;

-- What the errors say: what is missing, never the token.
SELECT is(pg_temp.auth_error(NULL) ->> 'message', 'authentication required', '401 without a token says so');
SELECT is(pg_temp.auth_error('{"sub": "flyt-internal-client"}') ->> 'message', 'missing required claims', '401 of missing claims says so');
SELECT is(pg_temp.auth_error('{"sub": "flyt-internal-client"}') ->> 'details',
	'The token''s organizationid and objectidentifier claims are missing or blank.', '401 names both missing claims');
SELECT is(pg_temp.auth_error(pg_temp.user_token('kari@afk.no', 'afk.no', 'user') - 'objectidentifier') ->> 'details',
	'The token''s objectidentifier claim is missing or blank.', '401 names the missing claim');
SELECT is(pg_temp.auth_error(pg_temp.user_token('x@agderfk.no', 'agderfk.no', 'user')) ->> 'message',
	'organisation agderfk.no is not authorised', '403 names the organisation that is not authorised');
SELECT is(pg_temp.auth_error(pg_temp.user_token('per@afk.no', 'afk.no', 'developer')) ->> 'message',
	'the token has no role that organisation afk.no authorises', '403 of roles names the organisation');
SELECT matches(pg_temp.auth_error(pg_temp.user_token('per@afk.no', 'afk.no', 'developer')) ->> 'details',
	'^The token holds DEVELOPER; .* lists USER for the organisation, which leaves the token with no role; the API needs USER',
	'403 says which roles the token holds, which the organisation lists, what is left, and that USER is needed');
SELECT matches(pg_temp.auth_error(pg_temp.user_token('kari@afk.no', 'afk.no', 'user') - 'roles') ->> 'details',
	'^The token holds no roles claim;', '403 says when the roles claim is missing');
SELECT matches(pg_temp.auth_error(pg_temp.user_token('kari@afk.no', 'afk.no', 'https://role-catalog.vigoiks.no/vigo/other/user', 'x')) ->> 'details',
	'^The token holds no role \(and 2 values that are not a Flyt role-catalog URL\);', '403 counts the role values it dropped');
SELECT matches(pg_temp.auth_error(pg_temp.user_token('bo@nobody.example', 'nobody.example', 'user')) ->> 'details',
	'lists no role for the organisation', '403 says when the organisation lists no role');
SELECT is(pg_temp.auth_error(pg_temp.user_token('x@agderfk.no', E'agder\nfk.no', 'user')) ->> 'message',
	'organisation agder?fk.no is not authorised', 'control characters of a claim are not repeated');
SELECT doesnt_match(
	(SELECT string_agg(pg_temp.auth_error(c)::text, ' ') FROM (VALUES (NULL::jsonb), ('{"sub": "flyt-internal-client"}'),
		(pg_temp.user_token('x@agderfk.no', 'agderfk.no', 'user')), (pg_temp.user_token('per@afk.no', 'afk.no', 'developer'))) v(c)),
	'eyJ|kari|per@|x@agderfk|internal_clients|internal client', 'no error body repeats the token, its subject, or internal clients');

-- The pairs the overlays render for namespace afk-no, with a token from each organisation.
SELECT ok(current_setting('flyt_instance.authorized_org_id_role_pairs')::jsonb @> :'afk_pairs'::jsonb,
	'afk-no''s rendered pairs are in force');
SELECT is(pg_temp.auth(claims), expected, 'afk-no: ' || description)
FROM (VALUES
	(1, pg_temp.user_token('a@afk.no', 'afk.no', 'user'), '00000', 'afk.no USER allowed'),
	(2, pg_temp.user_token('a@afk.no', 'afk.no', 'admin'), 'PT403', 'afk.no ADMIN denied'),
	(3, pg_temp.user_token('a@afk.no', 'afk.no', 'developer'), 'PT403', 'afk.no DEVELOPER denied'),
	(4, pg_temp.user_token('v@viken.no', 'viken.no', 'user'), '00000', 'viken.no USER allowed'),
	(5, pg_temp.user_token('v@viken.no', 'viken.no', 'developer'), 'PT403', 'viken.no DEVELOPER denied'),
	(6, pg_temp.user_token('f@frid-iks.no', 'frid-iks.no', 'user'), '00000', 'frid-iks.no USER allowed'),
	(7, pg_temp.user_token('f@frid-iks.no', 'frid-iks.no', 'admin'), 'PT403', 'frid-iks.no ADMIN denied'),
	(8, pg_temp.user_token('g@vigo.no', 'vigo.no', 'user'), '00000', 'vigo.no USER allowed'),
	(9, pg_temp.user_token('g@vigo.no', 'vigo.no', 'developer'), '00000', 'vigo.no DEVELOPER allowed'),
	(10, pg_temp.user_token('g@vigo.no', 'vigo.no', 'admin'), 'PT403', 'vigo.no ADMIN denied (ADMIN is not listed)'),
	(11, pg_temp.user_token('n@novari.no', 'novari.no', 'user'), '00000', 'novari.no USER allowed'),
	(12, pg_temp.user_token('n@novari.no', 'novari.no', 'developer'), '00000', 'novari.no DEVELOPER allowed'),
	(13, pg_temp.user_token('n@novari.no', 'novari.no', 'admin'), 'PT403', 'novari.no ADMIN denied'),
	(14, pg_temp.user_token('b@bfk.no', 'bfk.no', 'user'), 'PT403', 'bfk.no (another namespace) USER denied'),
	(15, '{"sub": "flyt-internal-client"}'::jsonb, 'PT401', 'a client token without org claims: 401')
) AS matrix(n, claims, expected, description)
ORDER BY n;

-- Both endpoints authorise, POST /rpc/retry with HTTP statuses
SELECT is(pg_temp.call('retry', 'none', '{"instance_id": 1}'), 401, 'retry without a token: 401');
SELECT is(pg_temp.call('retry', 'former internal client', '{"instance_id": 1}'), 401, 'retry with a client token: 401');
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": 1}'), 200, 'retry of a USER of an authorised organisation: 200');
SELECT is(pg_temp.call('retry_batch', 'none', '[1]'), 401, 'batch without a token: 401');
SELECT is(pg_temp.call('retry_batch', 'former internal client', '[1]'), 401, 'batch with a client token: 401');
SELECT is((pg_temp.request('retry', pg_temp.user_token('per@afk.no', 'afk.no', 'developer'), '{"instance_id": 1}')).status, 403,
	'retry of a role the organisation does not list: 403');
SELECT is((pg_temp.request('retry_batch', pg_temp.user_token('per@afk.no', 'afk.no', 'developer'), '[1]')).status, 403,
	'batch of a role the organisation does not list: 403');

-- Outcomes, POST /rpc/retry
SELECT matches(pg_temp.answer('retry', 'afk user', '{"instance_id": 1}') #>> '{}', '^[0-9a-f-]{36}$', '200 body is the new correlation id');
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": 424242}'), 404, 'unknown instance: 404');
SELECT is(pg_temp.answer('retry', 'afk user', '{"instance_id": 424242}') ->> 'message', 'instance 424242 not found', '404 says which');
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": 2}'), 500, 'no flow headers: 500');
SELECT is(pg_temp.answer('retry', 'afk user', '{"instance_id": 2}') ->> 'code', 'PT500', 'the 500 is PT500');
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": "abc"}'), 400, 'a non-integer id: 400');
SELECT is(pg_temp.call('retry', 'afk user', '{"id": 1}'), 404, 'a wrong argument name: 404 (PGRST202)');
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": null}'), 400, 'a null id: 400');

-- An unexpected failure (a trigger refuses the outbox row) is a 500 whose
-- body holds none of its internal text; the server log has it.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'internal secret text';
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON flyt.outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();
SELECT is(pg_temp.call('retry', 'afk user', '{"instance_id": 1}'), 500, 'an unexpected failure: 500');
SELECT doesnt_match(pg_temp.answer('retry', 'afk user', '{"instance_id": 1}')::text, 'internal secret',
	'the 500 body holds no internal error text');
SELECT is(pg_temp.answer('retry_batch', 'afk user', '[1]') -> 0 ->> 'status', 'error', 'the batch row says error');
SELECT doesnt_match(pg_temp.answer('retry_batch', 'afk user', '[1]')::text, 'internal secret',
	'the batch row holds no internal error text');
DROP TRIGGER refuse ON flyt.outbox;

-- POST /rpc/retry_batch with the raw JSON array as body
SELECT is(pg_temp.call('retry_batch', 'vigo developer', '[1, 424242, 2, 1]'), 200, 'batch: 200');
SELECT is(
	(SELECT jsonb_agg(jsonb_build_array(e ->> 'instance_id', e ->> 'status')) FROM jsonb_array_elements(pg_temp.answer('retry_batch', 'vigo developer', '[1, 424242, 2, 1]')) e),
	'[["1", "queued"], ["424242", "not_found"], ["2", "no_flow_headers"]]'::jsonb,
	'batch: one result per distinct id, in order');
SELECT ok((SELECT bool_and((e ->> 'correlation_id') IS NOT NULL) = true
	FROM jsonb_array_elements(pg_temp.answer('retry_batch', 'vigo developer', '[1]')) e), 'queued results carry the correlation id');
SELECT is(pg_temp.answer('retry_batch', 'afk user', '[]'), '[]'::jsonb, 'an empty batch: []');
SELECT is(pg_temp.call('retry_batch', 'afk user', '[1, "2"]'), 400, 'a string in the batch: 400');
SELECT is(pg_temp.answer('retry_batch', 'afk user', '[1, "2"]') ->> 'details', 'Element 2 is not an integer.', '400 says which element');
SELECT is(pg_temp.call('retry_batch', 'afk user', '[1.5]'), 400, 'a fraction: 400');
SELECT is(pg_temp.call('retry_batch', 'afk user', '[null]'), 400, 'a null: 400');
SELECT is(pg_temp.call('retry_batch', 'afk user', '[99999999999999999999]'), 400, 'out of bigint range: 400');
SELECT is(pg_temp.call('retry_batch', 'afk user', '{"ids": [1]}'), 400, 'an object body: 400');
SELECT is(pg_temp.answer('retry_batch', 'afk user', '{"ids": [1]}') ->> 'message',
	'the request body must be a JSON array of instance ids (integers)', '400 says what the body must be');
SELECT is(pg_temp.call('retry_batch', 'afk user', '5'), 400, 'a scalar body: 400');

-- Who asked: the JWT subject.
SELECT is((SELECT requested_by FROM flyt_instance_history(1) ORDER BY version DESC LIMIT 1), 'ola@vigo.no',
	'the history records the token subject as who asked');
-- ola@vigo.no retried instance 1 in three batches
SELECT is((SELECT count(*) FROM flyt_instance_history(1) WHERE requested_by = 'ola@vigo.no'), 3::bigint,
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

ALTER SYSTEM RESET flyt_instance.authorized_org_id_role_pairs;
SELECT pg_reload_conf() AS reloaded \gset
