#!/usr/bin/env bash
#
# log_secrets.sh — no secret of flyt_instance.kafka_config reaches the
# server log, on any path.
#
# A statement that sets kafka_config and fails (a property librdkafka
# rejects, SET of a setting no session may change, set_config(), a role
# without the privilege) was logged whole by log_min_error_statement, with
# its password; with log_statement = 'all' every such statement was.  Each
# statement here carries a password marker, on a server that logs every
# statement and every message down to DEBUG1; the markers must never appear
# in its log.  A valid value set with ALTER SYSTEM and reloaded reaches the
# worker (no marker in its messages either).
#
# Own cluster; always stopped.  Prints ok/not ok lines and "N passed, M
# failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 120

MARK=s3cr3t-marker-$RANDOM$RANDOM
BOOTSTRAP=127.0.0.1:9 # nothing listens there: the worker only reads the setting
worker_cluster_start -c "log_statement = 'all'" -c "log_min_error_statement = 'debug1'" \
	-c "log_min_messages = 'debug1'" -c "log_min_duration_statement = 0"
require_worker

try() { # SQL [ROLE] — run one statement that is expected to fail
	timeout 30 psql -X -q -d postgres ${2:+-U "$2"} -c "$1" >/dev/null 2>"$WORK/try.err" && return 1
	[ -s "$WORK/try.err" ] && ! grep -q "$MARK" "$WORK/try.err"
}
check "ALTER SYSTEM with a property librdkafka rejects fails" \
	try "ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.password=$MARK-1;no.such.property=1'"
check "ALTER SYSTEM with a value that is not key=value fails" \
	try "ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.password=$MARK-2;broken'"
check "SET in a session fails" \
	try "SET flyt_instance.kafka_config = 'sasl.password=$MARK-3'"
check "set_config() fails" \
	try "SELECT set_config('flyt_instance.kafka_config', 'sasl.password=$MARK-4', false)"
sql "CREATE ROLE flyt_secrets_user LOGIN" >/dev/null
check "ALTER SYSTEM by a role without the privilege fails" \
	try "ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.password=$MARK-5'" flyt_secrets_user
# (the client sees its own statement in CONTEXT; only the server log matters)
check "a PL/pgSQL block that sets it fails" \
	bash -c '! timeout 30 psql -X -q -d postgres -c "$1" >/dev/null 2>&1' _ "DO \$\$ BEGIN EXECUTE 'SET flyt_instance.kafka_config = ''sasl.password=$MARK-7'''; END \$\$"
sql "ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.mechanism=PLAIN;sasl.username=flyt;sasl.password=$MARK-6\\;x;security.protocol=SASL_PLAINTEXT'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 30 grep -q 'connecting to Kafka' "$CLUSTER_LOG"; then
	pass "the worker makes its handles with the reloaded setting"
else
	fail "the worker makes its handles with the reloaded setting" "$(tail -n 5 "$CLUSTER_LOG")"
fi
sleep 2 # let the worker's first connection attempts reach the log
n=$(grep -c "$MARK" "$CLUSTER_LOG" || true)
note "$(wc -l <"$CLUSTER_LOG") log lines; lines with a marker: $n"
if [ "$n" = 0 ]; then
	pass "no password marker in the server log"
else
	fail "no password marker in the server log" "$(grep "$MARK" "$CLUSTER_LOG" | head -n 5)"
fi
check "the statements themselves are logged, without their text" grep -q 'left out: it names flyt_instance.kafka_config' "$CLUSTER_LOG"
sql "ALTER SYSTEM RESET flyt_instance.kafka_config" >/dev/null
sql "DROP ROLE flyt_secrets_user" >/dev/null

finish
