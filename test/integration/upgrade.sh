#!/usr/bin/env bash
#
# Every released version upgrades: install each older version, update step by
# step with ALTER EXTENSION flyt_instance UPDATE, and compare the result with
# a fresh install of the current version, object by object (definitions,
# privileges, comments, storage options, pg_dump configuration).
#
# Runs against the shared test cluster (PGHOST/PGPORT/PGUSER from test/run.sh).
set -euo pipefail

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

work=$(mktemp -d)
cleanup() {
	psql_q -d postgres -c 'DROP DATABASE IF EXISTS flyt_upgrade_fresh' -c 'DROP DATABASE IF EXISTS flyt_upgrade_path' -c 'DROP DATABASE IF EXISTS flyt_upgrade_wire' >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# A canonical description of everything the extension owns.
describe() {
	psql_q -d "$1" <<'SQL'
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'flyt_instance'),
member AS (
	SELECT classid, objid FROM pg_depend, ext
	WHERE refclassid = 'pg_extension'::regclass AND refobjid = ext.oid AND deptype = 'e'
),
lines AS (
	SELECT 'member ' || pg_describe_object(classid, objid, 0) AS line FROM member
	UNION ALL
	SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
		|| E'\nacl ' || coalesce(array_to_string(p.proacl, ','), '-')
		|| E'\ncomment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
	FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
	UNION ALL
	SELECT 'schema ' || n.nspname || ' acl ' || coalesce(array_to_string(n.nspacl, ','), '-')
		|| ' comment ' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
	FROM pg_namespace n JOIN member m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
	UNION ALL
	SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text
		|| ' options ' || coalesce(array_to_string(c.reloptions, ','), '-')
		|| ' acl ' || coalesce(array_to_string(c.relacl, ','), '-')
		|| ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname IN ('flyt', 'flyt_api')
	UNION ALL
	SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		|| CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		|| coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
		|| CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
		|| coalesce(' comment ' || col_description(a.attrelid, a.attnum), '')
	FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	WHERE n.nspname IN ('flyt', 'flyt_api') AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'S')
	UNION ALL
	SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	FROM pg_constraint WHERE connamespace IN ('flyt'::regnamespace)
	UNION ALL
	SELECT 'index ' || pg_get_indexdef(indexrelid)
	FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'flyt'::regnamespace
	UNION ALL
	SELECT 'dumped ' || unnest(extconfig)::regclass FROM ext
)
SELECT line FROM lines ORDER BY line;
SQL
}

current=$(psql_q -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'flyt_instance'")
versions=$(psql_q -d postgres -c "SELECT version FROM pg_available_extension_versions WHERE name = 'flyt_instance' ORDER BY string_to_array(version, '.')::int[]")
echo "# current version $current; versions: $(echo $versions)"

psql_q -d postgres -c 'DROP DATABASE IF EXISTS flyt_upgrade_fresh' -c 'CREATE DATABASE flyt_upgrade_fresh'
psql_q -d flyt_upgrade_fresh -c 'CREATE EXTENSION flyt_instance'
describe flyt_upgrade_fresh > "$work/fresh"
if [ "$(psql_q -d flyt_upgrade_fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'flyt_instance'")" = "$current" ]; then
	ok "a fresh install is version $current"
else
	not_ok "a fresh install is version $current"
fi

for from in $versions; do
	[ "$from" = "$current" ] && continue
	psql_q -d postgres -c 'DROP DATABASE IF EXISTS flyt_upgrade_path' -c 'CREATE DATABASE flyt_upgrade_path'
	psql_q -d flyt_upgrade_path -c "CREATE EXTENSION flyt_instance VERSION '$from'"
	# data written by the old version must survive the update
	psql_q -d flyt_upgrade_path -c "SELECT flyt_register_instance('{\"sourceApplicationId\": 2, \"correlationId\": \"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11\"}', '{}')" >/dev/null
	# one step at a time, along PostgreSQL's own update path
	path=$(psql_q -d postgres -c "SELECT path FROM pg_extension_update_paths('flyt_instance') WHERE source = '$from' AND target = '$current'")
	step_ok=true
	for to in $(echo "$path" | tr -s '-' ' ' | cut -d' ' -f2-); do
		if ! psql_q -d flyt_upgrade_path -c "ALTER EXTENSION flyt_instance UPDATE TO '$to'"; then
			step_ok=false
		fi
	done
	if $step_ok && [ "$(psql_q -d flyt_upgrade_path -c "SELECT extversion FROM pg_extension WHERE extname = 'flyt_instance'")" = "$current" ]; then
		ok "$from updates to $current along $path"
	else
		not_ok "$from updates to $current along $path"
	fi
	describe flyt_upgrade_path > "$work/upgraded"
	if diff -u "$work/fresh" "$work/upgraded" > "$work/diff"; then
		ok "$from updated to $current equals a fresh install ($(wc -l < "$work/fresh") lines compared)"
	else
		not_ok "$from updated to $current equals a fresh install"
		head -60 "$work/diff"
	fi
	# the history too: the retry appends the next version (0.5 keys the
	# history by instance and version alone)
	if [ "$(psql_q -d flyt_upgrade_path -c 'SELECT count(*) FROM flyt.instance')" = 1 ] &&
		psql_q -d flyt_upgrade_path -c 'SELECT flyt_retry(1)' >/dev/null &&
		[ "$(psql_q -d flyt_upgrade_path -c "SELECT string_agg(version || ' ' || event_type, ', ' ORDER BY version) FROM flyt_instance_history(1)")" = "1 REGISTERED, 2 RETRY_REQUESTED" ]; then
		ok "data of $from is kept and usable after the update"
	else
		not_ok "data of $from is kept and usable after the update"
	fi
done

# 0.3 -> 0.4 rewrites what waits in the outbox to the original's wire form:
# flow headers as Jackson writes InstanceFlowHeaders, error args null.
psql_q -d postgres -c 'DROP DATABASE IF EXISTS flyt_upgrade_wire' -c 'CREATE DATABASE flyt_upgrade_wire'
psql_q -d flyt_upgrade_wire -c "CREATE EXTENSION flyt_instance VERSION '0.3'"
psql_q -d flyt_upgrade_wire -c "INSERT INTO flyt.outbox (event_name, topic, key, headers, value) VALUES (
	'instance-registration-error', 'fintlabs-no.flyt.event.error.instance-registration-error', NULL,
	jsonb_build_object('flyt.instance-flow-headers',
		'{\"correlationId\":\"9B7A1F0E-3C55-4E0A-9D1E-5F2B0C1D7A11\",\"sourceApplicationId\":2,\"futureField\":{\"x\":1}}',
		'flyt.event-id', 'b1d6f6a2-6f0a-4f61-9d39-0d3c6b1c2a11'),
	'{\"errors\":[{\"errorCode\":\"FINT_FLYT_INSTANCE_SERVICE_GENERAL_SYSTEM_ERROR\",\"args\":{}}]}')"
psql_q -d flyt_upgrade_wire -c "ALTER EXTENSION flyt_instance UPDATE TO '0.4'"
got=$(psql_q -d flyt_upgrade_wire -c "SELECT headers ->> 'flyt.instance-flow-headers' || ' ' || value || ' ' || (headers ->> 'flyt.event-id') FROM flyt.outbox")
want='{"sourceApplicationId":2,"sourceApplicationIntegrationId":null,"sourceApplicationInstanceId":null,"fileIds":null,"correlationId":"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11","integrationId":null,"instanceId":null,"configurationId":null,"archiveInstanceId":null} {"errors":[{"errorCode":"FINT_FLYT_INSTANCE_SERVICE_GENERAL_SYSTEM_ERROR","args":null}]} b1d6f6a2-6f0a-4f61-9d39-0d3c6b1c2a11'
if [ "$got" = "$want" ]; then
	ok "0.3 -> 0.4 rewrites a waiting outbox row to the original's wire form, its event id kept"
else
	not_ok "0.3 -> 0.4 rewrites a waiting outbox row to the original's wire form, its event id kept"
	printf '#   want: %s\n#   got:  %s\n' "$want" "$got"
fi

# The install script for the current version and the update scripts must
# all be packaged.
if [ "$(psql_q -d postgres -c "SELECT count(*) FROM pg_available_extension_versions WHERE name = 'flyt_instance' AND version = '$current'")" = 1 ]; then
	ok "version $current is installable"
else
	not_ok "version $current is installable"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
