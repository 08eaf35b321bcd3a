-- Privileges: nothing the extension creates is open to PUBLIC, and an
-- ordinary role can do nothing until it is granted something.
BEGIN;
SELECT plan(11);

SELECT is(
	(SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
	 JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flyt_instance'
	 WHERE has_function_privilege('public', p.oid, 'EXECUTE')),
	0::bigint, 'no function is executable by PUBLIC');
SELECT is(
	(SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
	 JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flyt_instance'
	 WHERE p.prosecdef AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)),
	0::bigint, 'every SECURITY DEFINER function pins search_path');
SELECT ok(NOT has_schema_privilege('public', 'flyt', 'USAGE'), 'PUBLIC cannot use schema flyt');
SELECT is(
	(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'flyt' AND (has_table_privilege('public', c.oid, 'SELECT')
	   OR has_table_privilege('public', c.oid, 'INSERT') OR has_table_privilege('public', c.oid, 'DELETE'))),
	0::bigint, 'PUBLIC has no table privilege in flyt');

CREATE ROLE flyt_tap_nobody;
SET LOCAL ROLE flyt_tap_nobody;
SELECT throws_ok($$SELECT flyt_retry(1)$$, '42501', NULL, 'an ungranted role cannot retry');
SELECT throws_ok($$SELECT flyt_register_instance('{}', '{}')$$, '42501', NULL, 'an ungranted role cannot register');
SELECT throws_ok($$SELECT * FROM flyt.instance$$, '42501', NULL, 'an ungranted role cannot read instances');
RESET ROLE;

-- EXECUTE is all an operator needs: the functions are SECURITY DEFINER.
CREATE ROLE flyt_tap_operator;
GRANT EXECUTE ON FUNCTION flyt_retry(bigint), flyt_retry_batch(bigint[]),
    flyt_instance(bigint), flyt_instance_history(bigint) TO flyt_tap_operator;
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}') AS operator_instance \gset
SET LOCAL ROLE flyt_tap_operator;
SELECT lives_ok(format('SELECT flyt_retry(%s)', :operator_instance), 'an operator with the README grants can retry');
SELECT is((SELECT requested_by FROM flyt_instance_history(:operator_instance) ORDER BY version DESC LIMIT 1),
	'flyt_tap_operator', 'the retry is recorded as asked by the operator, not the owner');
SELECT throws_ok($$SELECT * FROM flyt.outbox$$, '42501', NULL, 'the operator still cannot read the tables');
RESET ROLE;

-- A hostile search_path cannot redirect the extension's statements: they are
-- schema-qualified and use pg_catalog operators.
CREATE SCHEMA flyt_tap_evil;
CREATE TABLE flyt_tap_evil.outbox (id bigint);
SET LOCAL search_path = flyt_tap_evil, public;
TRUNCATE flyt.instance, flyt.instance_event, flyt.outbox RESTART IDENTITY;
SELECT flyt_register_instance('{"sourceApplicationId": 2, "correlationId": "9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11"}', '{}');
SELECT is((SELECT count(*) FROM flyt.outbox), 1::bigint, 'messages go to flyt.outbox whatever the search_path');

SELECT * FROM finish();
ROLLBACK;
