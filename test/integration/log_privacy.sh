#!/usr/bin/env bash
#
# log_privacy.sh — no instance data in the server log (issue 10, item 9).
# Instances carry personal data.  Every error path that takes an instance
# or flow headers gets a marker string in that data; the server logs at
# log_min_messages = debug1, log_min_error_statement = error,
# log_error_verbosity = verbose and log_parameter_max_length_on_error = -1
# (bind parameters in full), and the marker must never reach the log,
# while each error itself does (so a case cannot pass by not running).
#
#   SQL:   flyt_register_instance and flyt_instance_dispatched rejecting the
#          data (wire.c), failing for reasons of their own (read-only
#          transaction, lock timeout, a CHECK constraint whose detail quotes
#          the row, flyt_instance.org_id unset), called from PL/pgSQL (whose
#          CONTEXT quotes the call) and through the extended protocol with
#          parameters (pgbench -M extended);
#   Kafka: consumed messages that are dead-lettered: \u0000 in the instance
#          and in the flow headers (jansson reads it, jsonb cannot store it:
#          once rejected by jsonb_in with a CONTEXT line quoting the value),
#          invalid JSON right before the marker, too deep, too large, too
#          many values, wrong types; and one valid message.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

MARKER="Kari-Nordmann-$$-fnr-01017012345"
CID=9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11

broker_start
worker_cluster_start \
	-c "log_min_messages = debug1" \
	-c "log_min_error_statement = error" \
	-c "log_error_verbosity = verbose" \
	-c "log_parameter_max_length_on_error = -1"
require_worker

# log_size — bytes in the server log so far.
log_size() {
	stat -c %s "$CLUSTER_LOG"
}

# log_since OFFSET — what the server logged after OFFSET bytes.
log_since() {
	tail -c +"$(($1 + 1))" "$CLUSTER_LOG"
}

# no_marker_since NAME OFFSET WANT — the log after OFFSET has an ERROR
# matching WANT and no marker.
no_marker_since() {
	local name=$1 from=$2 want=$3 logged
	logged=$(log_since "$from")
	if ! grep -qE -- "ERROR: .*$want" <<<"$logged"; then
		fail "$name: the error is logged" "log: $(head -c 1500 <<<"$logged")"
	elif grep -q -- "$MARKER" <<<"$logged"; then
		fail "$name: the marker stays out of the log" "$(grep -n -- "$MARKER" <<<"$logged" | head -c 1500)"
	else
		pass "$name: error logged without the data"
	fi
}

# sql_case NAME WANT SQL — SQL (a script, with psql variable :'h', the
# fixture headers) fails with an error matching WANT, which the server logs
# without the marker.
sql_case() {
	local name=$1 want=$2 query=$3 from out rc=0
	from=$(log_size)
	out=$(printf '%s\n' "$query" |
		timeout 30 psql -X -At -q -v ON_ERROR_STOP=1 -v h="$FIX_HEADERS" -d postgres -f - 2>&1) || rc=$?
	if [ "$rc" -eq 0 ] || ! grep -qE -- "$want" <<<"$out"; then
		fail "$name: fails with '$want'" "exit $rc: $(head -c 600 <<<"$out")"
		return 0
	fi
	no_marker_since "$name" "$from" "$want"
}

# --- SQL: rejected by the validation (wire.c) ------------------------------------

sql_case "value not a string" 'valuePerKey.navn must be a string' \
	"SELECT flyt_register_instance(:'h', '{\"valuePerKey\": {\"fnr\": \"$MARKER\", \"navn\": [5]}}');"
sql_case "instance not an object" 'instance must be a JSON object' \
	"SELECT flyt_register_instance(:'h', '[\"$MARKER\"]');"
sql_case "instance in a collection not an object" 'objectCollectionPerKey.parter\[0\] must be a JSON object' \
	"SELECT flyt_register_instance(:'h', '{\"objectCollectionPerKey\": {\"parter\": [\"$MARKER\"]}}');"
sql_case "createdAt of the wrong type" 'createdAt must be an ISO-8601' \
	"SELECT flyt_register_instance(:'h', '{\"createdAt\": [\"$MARKER\"]}');"
sql_case "correlationId not a UUID" 'headers.correlationId must be a UUID' \
	"SELECT flyt_register_instance('{\"sourceApplicationId\": 2, \"correlationId\": \"$MARKER\"}', '{}');"
sql_case "headers not an object" 'headers must be a JSON object' \
	"SELECT flyt_register_instance('[\"$MARKER\"]', '{}');"
sql_case "instance nested too deep" 'nested deeper than 64 levels' \
	"SELECT flyt_register_instance(:'h', (repeat('{\"objectCollectionPerKey\":{\"a\":[', 65) || '{\"valuePerKey\":{\"x\":\"$MARKER\"}}' || repeat(']}}', 65))::jsonb);"
sql_case "headers nested too deep" 'headers.x is nested deeper than 32 levels' \
	"SELECT flyt_register_instance(:'h'::jsonb || jsonb_build_object('x', (repeat('[', 40) || '\"$MARKER\"' || repeat(']', 40))::jsonb), '{}');"
sql_case "headers too large" 'headers are too large' \
	"SELECT flyt_register_instance(:'h'::jsonb || jsonb_build_object('x', repeat('$MARKER', 5000)), '{}');"
sql_case "instance too large" 'instance is too large' \
	"SET flyt_instance.max_instance_bytes = '1kB';
	 SELECT flyt_register_instance(:'h', jsonb_build_object('valuePerKey', jsonb_build_object('x', repeat('$MARKER', 100))));"
sql_case "instance with too many values" 'instance has too many values' \
	"SELECT flyt_register_instance(:'h', jsonb_build_object('valuePerKey', jsonb_build_object('x', '$MARKER'), 'ignored', (SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)));"
sql_case "dispatched without instanceId" 'headers.instanceId is required' \
	"SELECT flyt_instance_dispatched('{\"sourceApplicationId\": 2, \"correlationId\": \"$CID\", \"sourceApplicationInstanceId\": \"$MARKER\"}');"
sql_case "dispatched with bad headers" 'headers.sourceApplicationId must be an integer' \
	"SELECT flyt_instance_dispatched('{\"sourceApplicationId\": \"$MARKER\", \"correlationId\": \"$CID\", \"instanceId\": 1}');"

# --- SQL: errors raised elsewhere, with valid data --------------------------------

GOOD="{\"valuePerKey\": {\"fnr\": \"$MARKER\"}}"
sql_case "read-only transaction" 'read-only transaction' \
	"BEGIN READ ONLY;
	 SELECT flyt_register_instance(:'h', '$GOOD');"
sql_case "dispatched in a read-only transaction" 'read-only transaction' \
	"BEGIN READ ONLY;
	 SELECT flyt_instance_dispatched(:'h'::jsonb || '{\"instanceId\": 1, \"x\": \"$MARKER\"}');"
# A PL/pgSQL caller's CONTEXT quotes the call: SQL statement "SELECT ...".
sql_case "PL/pgSQL caller, error in the validation" 'valuePerKey.navn must be a string' \
	"SELECT set_config('my.h', :'h', false) IS NULL;
	 DO \$\$ BEGIN PERFORM flyt_register_instance(current_setting('my.h')::jsonb, '{\"valuePerKey\": {\"fnr\": \"$MARKER\", \"navn\": [5]}}'); END \$\$;"
sql_case "PL/pgSQL caller, error in the store" 'read-only transaction' \
	"SELECT set_config('my.h', :'h', false) IS NULL;
	 BEGIN READ ONLY;
	 DO \$\$ BEGIN PERFORM flyt_register_instance(current_setting('my.h')::jsonb, '$GOOD'); END \$\$;"

# A constraint violation's DETAIL quotes the failing row (the payload): the
# client gets it, the log a note.
sql "ALTER TABLE flyt.instance ADD CONSTRAINT log_privacy_test CHECK (payload::text NOT LIKE '%fnr%')" >/dev/null
sql_case "CHECK constraint violation" 'violates check constraint "log_privacy_test"' \
	"SELECT flyt_register_instance(:'h', '$GOOD');"
sql "ALTER TABLE flyt.instance DROP CONSTRAINT log_privacy_test" >/dev/null

# A lock timeout inside the store, while another session locks flyt.instance.
(printf '%s\n' "BEGIN; LOCK TABLE flyt.instance IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;" |
	timeout 30 psql -X -q -d postgres -f - >/dev/null 2>&1) &
locker=$!
if wait_until 10 sql_is t "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'flyt.instance'::regclass AND mode = 'AccessExclusiveLock' AND granted)"; then
	sql_case "lock timeout" 'canceling statement due to lock timeout' \
		"SET lock_timeout = '200ms';
		 SELECT flyt_register_instance(:'h', '$GOOD');"
else
	fail "another session locks flyt.instance"
fi
sql_quiet "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' AND pid <> pg_backend_pid()" >/dev/null || true
wait "$locker" 2>/dev/null || true

# The extended protocol with the data as bind parameters: the CONTEXT line
# "unnamed portal with parameters: $1 = ..." must not be logged.
pgbench=$("${PG_CONFIG:-pg_config}" --bindir)/pgbench
if [ -x "$pgbench" ]; then
	printf '%s\n' 'SELECT flyt_register_instance(:h, :inst);' >"$WORK/extended.sql"
	from=$(log_size)
	out=$(timeout 30 "$pgbench" -n -t 1 -M extended -f "$WORK/extended.sql" \
		-D "h=$FIX_HEADERS" -D "inst={\"valuePerKey\": {\"fnr\": \"$MARKER\", \"navn\": [5]}}" postgres 2>&1) || true
	if grep -q 'valuePerKey.navn must be a string' <<<"$out"; then
		no_marker_since "extended protocol with parameters" "$from" 'valuePerKey.navn must be a string'
	else
		fail "extended protocol: pgbench reaches the error" "$(head -c 600 <<<"$out")"
	fi
else
	note "no pgbench in $(dirname "$pgbench"): extended protocol not checked"
fi

# --- Kafka: dead-lettered messages ---------------------------------------------------

if wait_status_up 45; then
	pass "status UP"
else
	bail "status UP" "flyt_status(): $(show_status)"
fi
from=$(log_size)
H="$H_FLOW=$FIX_HEADERS"

# headers_with JQ — the fixture headers changed by JQ, with $m the marker.
headers_with() {
	jq -c --arg m "$MARKER" "$1" <<<"$FIX_HEADERS"
}

kafka_bad=0
# bad VALUE [-H ...] — one instance-received message that must be dead-lettered.
bad() {
	produce "$T_RECEIVED" "bad-$kafka_bad" "$@" || bail "kcat produces" "$(tail -n 5 "$WORK/kcat.err")"
	kafka_bad=$((kafka_bad + 1))
}
OK_VALUE='{"valuePerKey": {"fnr": "ok"}}'
bad "{\"valuePerKey\": {\"fnr\": \"$MARKER\\u0000\"}}" -H "$H"
bad "$OK_VALUE" -H "$H_FLOW=$(headers_with '.x = {"y": [($m + "\u0000")]}')"
bad "{\"valuePerKey\": {\"fnr\": \"ok\"}} $MARKER" -H "$H"
bad "{\"valuePerKey\": {\"fnr\": $MARKER}}" -H "$H"
bad "{\"valuePerKey\": {\"fnr\": \"\\uD800$MARKER\"}}" -H "$H"
bad "{\"valuePerKey\": {\"fnr\": \"$MARKER\", \"navn\": [5]}}" -H "$H"
bad "$OK_VALUE" -H "$H_FLOW=$(headers_with '.correlationId = $m')"
bad "$OK_VALUE" -H "$H_FLOW=$(headers_with '.x = ([range(40)] | reduce .[] as $i ([$m]; [.]))')"
# (one argument of kcat may be 128 kB at most)
bad "$OK_VALUE" -H "$H_FLOW=$(headers_with '.x = ([range(2000)] | map($m) | join(""))')"
bad "{\"valuePerKey\": {\"fnr\": \"$MARKER\"}, \"ignored\": [$(seq -s, 1 100000)]}" -H "$H"
bad "$OK_VALUE" -H "$H_FLOW={\"sourceApplicationId\": 2, \"correlationId\": \"$MARKER\\u0000\"}"
bad "$OK_VALUE" -H "$H_FLOW={\"sourceApplicationId\": 2, \"correlationId\": $MARKER}"
produce "$T_DISPATCHED" "bad-dispatched" "$MARKER" -H "$H_FLOW=$(headers_with '.sourceApplicationInstanceId = $m')" ||
	bail "kcat produces" "$(tail -n 5 "$WORK/kcat.err")"
kafka_bad=$((kafka_bad + 1))
produce "$T_RECEIVED" "good" "$GOOD" -H "$H" || bail "kcat produces" "$(tail -n 5 "$WORK/kcat.err")"

if wait_until 60 sql_is "$kafka_bad" "SELECT count(*) FROM flyt.dead_letter"; then
	pass "every bad message is dead-lettered ($kafka_bad)"
else
	fail "every bad message is dead-lettered ($kafka_bad)" \
		"dead letters: $(sql_quiet "SELECT count(*) FROM flyt.dead_letter")"
fi
if wait_until 30 sql_is 1 "SELECT count(*) FROM flyt.instance WHERE payload -> 'valuePerKey' ->> 'fnr' = '$MARKER'"; then
	pass "the valid message is registered"
else
	fail "the valid message is registered"
fi
check_eq "dead letters give the reasons" \
	"$(printf '%s\n' \
		'valuePerKey.fnr must not contain \u0000' \
		'headers.x.y[0] must not contain \u0000' \
		'instance is not valid JSON' \
		'instance is not valid JSON' \
		'instance is not valid JSON' \
		'valuePerKey.navn must be a string' \
		'headers.correlationId must be a UUID' \
		'headers.x is nested deeper than 32 levels' \
		'headers are too large' \
		'instance has too many values' \
		'headers.correlationId must not contain \u0000' \
		'headers is not valid JSON' \
		'headers.instanceId is required' | LC_ALL=C sort)" \
	"$(sql "SELECT failure_details ->> 'errorMessage' FROM flyt.dead_letter ORDER BY failure_details ->> 'errorMessage' COLLATE \"C\"")"
logged=$(log_since "$from")
check_eq "each dead letter is logged" "$kafka_bad" "$(grep -c 'moved to flyt.dead_letter' <<<"$logged" || true)"
if grep -q -- "$MARKER" <<<"$logged"; then
	fail "consumed messages: the marker stays out of the log" "$(grep -n -- "$MARKER" <<<"$logged" | head -c 1500)"
else
	pass "consumed messages: the marker stays out of the log"
fi
check_eq "nothing in the log quotes JSON data" 0 "$(grep -c 'JSON data, line' <<<"$logged" || true)"

# --- SQL: flyt_instance.org_id unset (last: the worker cannot work without it) ---

sql "ALTER SYSTEM SET flyt_instance.org_id = ''" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_until 10 sql_is "" "SHOW flyt_instance.org_id" || fail "org_id is unset by a reload"
sql_case "org_id unset" 'flyt_instance.org_id is not set' \
	"SELECT flyt_register_instance(:'h', '$GOOD');"
sql_case "org_id unset, dispatched" 'flyt_instance.org_id is not set' \
	"SELECT flyt_instance_dispatched(:'h'::jsonb || jsonb_build_object('instanceId', (SELECT min(id) FROM flyt.instance), 'x', '$MARKER'));"

check_eq "the whole log is free of the marker" 0 "$(grep -c -- "$MARKER" "$CLUSTER_LOG" || true)"

finish
