#!/usr/bin/env bash
#
# wire_memory.sh — the memory one instance may take (issue 10, item 12).
# Before, flyt_register_instance of a 4 MB instance whose collection holds
# 1M empty objects took 8.4 s and 3.6 GB of backend memory, and the same
# parse ran in the worker for every consumed message.  Now an instance is
# limited to FLYT_MAX_INSTANCE_VALUES (100000) JSON values, counted before
# any tree is built, and the trees cost a few hundred bytes per value.
#
# Measured on the 2-core test machine, VmHWM of a fresh backend before and
# after one call, the input read from a table (so that the caller's own
# jsonb_in is not counted), old code → new code:
#
#   1M empty objects, 4.0 MB of text   3,634 MB, accepted after 8.4 s
#                                      → +10 MB, rejected in 13 ms
#   2M objects {"valuePerKey":{"k":"v"}}, 58 MB of text
#                                      +302 MB, rejected after 0.54 s (too large)
#                                      → +90 MB (detoasting the 88 MB argument),
#                                        rejected in 47 ms
#   99,997 empty objects, 400 kB       +365 MB, 0.54 s → +86 MB, 0.31 s
#   14,000 parties of 5 values, 2.1 MB +97 MB, 0.26 s → +41 MB, 0.14 s
#   one 15 MB string                   +180 MB, 0.71 s → +107 MB, 0.67 s
#
# The checks below use generous bounds (a tenth of the old figures), so
# that they fail on the old code and not on a slower machine:
#
#   SQL:   1M empty objects and 2M strings are rejected, each in under 2 s
#          with under 64 MB of growth; 99,997 empty objects (the most
#          expensive instance within the value limit) take under 200 MB.
#   Kafka: a message of 250,000 empty objects is dead-lettered as too many
#          values; one of 99,997 is taken in (registered, or dead-lettered
#          when its DTO is larger than Kafka's message.max.bytes); the
#          worker grows by under 200 MB.
#
# 99,997 empty objects are 400 kB of text but their canonical DTO is 4.7 MB
# ({"valuePerKey":{},"objectCollectionPerKey":{}} each): whether such an
# instance is accepted depends on the size limits of the produced message,
# not on what is checked here.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2119,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

broker_start
worker_cluster_start
require_worker

# The inputs, built once in a session of their own.
sql "CREATE TABLE big (name text PRIMARY KEY, j jsonb)" >/dev/null
sql "INSERT INTO big VALUES
	('objects_1m', ('{\"objectCollectionPerKey\":{\"a\":[' || repeat('{},', 999999) || '{}]}}')::jsonb),
	('strings_2m', jsonb_build_object('objectCollectionPerKey', jsonb_build_object('a', to_jsonb(array_fill('v'::text, ARRAY[2000000]))))),
	('objects_99997', ('{\"objectCollectionPerKey\":{\"a\":[' || repeat('{},', 99996) || '{}]}}')::jsonb)" >/dev/null

# register_measured NAME — in a fresh session: flyt_register_instance of
# big NAME; prints "<kB of VmHWM growth> <ms> <result or SQLSTATE: message>".
register_measured() {
	sql -v name="$1" -v h="$FIX_HEADERS" "
		CREATE FUNCTION pg_temp.hwm() RETURNS bigint LANGUAGE sql AS \$\$
			SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\\s+(\\d+)'))[1]::bigint
		\$\$;
		CREATE FUNCTION pg_temp.measure(h jsonb, name text) RETURNS text LANGUAGE plpgsql AS \$\$
		DECLARE
			before bigint := pg_temp.hwm();
			started timestamptz := clock_timestamp();
			result text;
		BEGIN
			BEGIN
				result := flyt_register_instance(h, (SELECT j FROM big WHERE big.name = measure.name))::text;
			EXCEPTION WHEN OTHERS THEN
				result := SQLSTATE || ': ' || SQLERRM;
			END;
			RETURN (pg_temp.hwm() - before) || ' ' ||
				round(extract(epoch FROM clock_timestamp() - started) * 1000) || ' ' || result;
		END \$\$;
		SELECT pg_temp.measure(:'h', :'name');"
}

# sql_measured NAME MAX_KB MAX_MS EXPECTED_RESULT_REGEX
sql_measured() {
	local name=$1 max_kb=$2 max_ms=$3 want=$4 out kb ms result
	out=$(register_measured "$name") || {
		fail "$name: measured" "$out"
		return 0
	}
	read -r kb ms result <<<"$out"
	note "$name: VmHWM +$((kb / 1024)) MB, $ms ms: $result"
	if [[ $result =~ $want ]]; then pass "$name: $want"; else fail "$name: $want" "got: $result"; fi
	if [ "$kb" -lt "$max_kb" ]; then
		pass "$name: memory grows by under $((max_kb / 1024)) MB"
	else
		fail "$name: memory grows by under $((max_kb / 1024)) MB" "grew by $kb kB"
	fi
	if [ "$ms" -lt "$max_ms" ]; then
		pass "$name: done in under $max_ms ms"
	else
		fail "$name: done in under $max_ms ms" "took $ms ms"
	fi
}

# --- SQL --------------------------------------------------------------------------

# (a smaller max_instance_bytes makes these "too large": also fine)
sql_measured objects_1m $((64 * 1024)) 2000 '^54000: instance (has too many values|is too large)$'
sql_measured strings_2m $((64 * 1024)) 2000 '^54000: instance (has too many values|is too large)$'
sql_measured objects_99997 $((200 * 1024)) 10000 '^([0-9]+|54000: .* too large.*)$'

# --- Kafka ------------------------------------------------------------------------

if wait_status_up 45; then
	pass "status UP"
else
	bail "status UP" "flyt_status(): $(show_status)"
fi
worker_pid=$(sql "SELECT flyt_status() -> 'worker' ->> 'pid'")
worker_hwm() {
	sql "SELECT (regexp_match(pg_read_file('/proc/$worker_pid/status'), 'VmHWM:\\s+(\\d+)'))[1]"
}
before=$(worker_hwm)
registered_before=$(sql "SELECT count(*) FROM flyt.instance")
# (kcat reads the value from stdin: no limit on arguments)
produce "$T_RECEIVED" "objects-250k" "{\"objectCollectionPerKey\":{\"a\":[$(printf '{},%.0s' $(seq 249999)){}]}}" \
	-H "$H_FLOW=$FIX_HEADERS" || bail "kcat produces 250,000 objects" "$(tail -n 5 "$WORK/kcat.err")"
produce "$T_RECEIVED" "objects-99997" "{\"objectCollectionPerKey\":{\"a\":[$(printf '{},%.0s' $(seq 99996)){}]}}" \
	-H "$H_FLOW=$FIX_HEADERS" || bail "kcat produces 99,997 objects" "$(tail -n 5 "$WORK/kcat.err")"
# taken_in — both messages are consumed: 2 dead letters, or 1 and the instance.
taken_in() {
	sql_is 2 "SELECT (SELECT count(*) FROM flyt.dead_letter) + (SELECT count(*) FROM flyt.instance) - $registered_before"
}
if wait_until 60 taken_in; then
	pass "both messages are consumed"
else
	fail "both messages are consumed" "dead letters: $(sql_quiet "SELECT jsonb_agg(failure_details) FROM flyt.dead_letter")"
fi
check_eq "250,000 objects: dead-lettered as too many values" "instance has too many values" \
	"$(sql "SELECT failure_details ->> 'errorMessage' FROM flyt.dead_letter
		WHERE message_key = convert_to('objects-250k', 'UTF8')")"
outcome=$(sql "SELECT coalesce(
	(SELECT 'dead-lettered ' || (failure_details ->> 'sqlstate') || ': ' || (failure_details ->> 'errorMessage')
	 FROM flyt.dead_letter WHERE message_key = convert_to('objects-99997', 'UTF8')),
	(SELECT 'registered' WHERE (SELECT count(*) FROM flyt.instance) > $registered_before),
	'missing')")
note "99,997 objects: $outcome"
case $outcome in
registered | 'dead-lettered 54000: '*too\ large*) pass "99,997 objects: registered, or dead-lettered as too large" ;;
*) fail "99,997 objects: registered, or dead-lettered as too large" "got: $outcome" ;;
esac
check_eq "the worker is the same process" "$worker_pid" "$(sql "SELECT flyt_status() -> 'worker' ->> 'pid'")"
after=$(worker_hwm)
note "worker VmHWM: $((before / 1024)) MB before, $((after / 1024)) MB after"
if [ $((after - before)) -lt $((200 * 1024)) ]; then
	pass "the worker grows by under 200 MB"
else
	fail "the worker grows by under 200 MB" "grew by $((after - before)) kB"
fi

finish
