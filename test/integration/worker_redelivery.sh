#!/usr/bin/env bash
#
# worker_redelivery.sh — failed deliveries, redelivery, dead letters and the
# circuit breaker (docs/worker.md, "Producing" and "Circuit breaker"):
#
#   - the producer is given message.max.bytes=1000, so librdkafka refuses
#     any larger message locally: a delivery that always fails.  (Such an
#     instance cannot be registered any more: flyt_register_instance refuses
#     what could never be sent.  test_register_unsendable (lib.sh) queues
#     its instance-registered all the same.)  A big
#     instance's instance-registered row is tried 1 + redelivery_max_no (2)
#     times, its attempts climb, then it moves to flyt.dead_letter
#     (TRANSIENT, 3 attempts, errorMessage, the payload) and
#     flyt_instance_dead_lettered_total counts it;
#   - flyt_retry of that instance: the retry message dies the same way, which
#     queues a (small) error.instance-retry-request-error for the instance
#     with the retry's flow headers and records RETRY_FAILED; the 5
#     consecutive failures on the way open the circuit, the delivered error
#     message closes it;
#   - while a big message waits for redelivery, a small message of another
#     key is delivered at once, and a later message of the same key
#     (instance-deleted after flyt_instance_dispatched) waits until the big
#     one is dead-lettered;
#   - circuit breaker, on a second cluster with the usual Kafka settings:
#     broker `down` trips it (OPEN, with a reason) and the outbox keeps the
#     retries; after `up` it goes HALF_OPEN then CLOSED, the outbox drains
#     in order and flyt_instance_circuit_state is 0.
#
# Own broker and clusters; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2317,SC2153,SC2154
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 170

# Stop the cluster while the broker still runs (a worker whose broker is
# gone may take long to stop), then the broker.  Both idempotent.
redelivery_teardown() {
	without_broker_fds cluster_destroy || true
	it_teardown
}
cluster_trap redelivery_teardown

NORMAL_KAFKA_CONFIG=$KAFKA_CONFIG
STEP_WAIT=15 # deadline of one wait of the redelivery part (expected: < 3 s)

# --- helpers ------------------------------------------------------------------------

outbox_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'event', event_name, 'key', key, 'attempts', attempts, 'next_attempt_at', next_attempt_at, 'last_error', last_error) ORDER BY id), '[]') FROM flyt.outbox"
}

outbox_is() {
	sql_is "$1" "SELECT count(*) FROM flyt.outbox"
}

dead_letter_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'topic', topic, 'outbox_id', outbox_id, 'transience', failure_transience, 'attempts', message_delivery_attempts, 'details', failure_details) ORDER BY id), '[]') FROM flyt.dead_letter"
}

# The worker's errors in the server log (for failure reports).
log_errors() {
	grep -E 'ERROR|FATAL|PANIC|flyt_instance: (outbox|Kafka circuit)' "$CLUSTER_LOG" 2>/dev/null |
		grep -v 'librdkafka: FAIL' | tail -n 6 | tr '\n' ' ' | head -c 1500 || true
}

is_dead_lettered() {
	sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE outbox_id = $1"
}

# watch_outbox_row OUTBOX_ID SECONDS — poll until the row is dead-lettered;
# MAX_SEEN is the highest attempts seen while it was still in flyt.outbox,
# SEEN_ERROR its last_error then.
watch_outbox_row() {
	local ob=$1 secs=$2 a e
	MAX_SEEN=-1
	SEEN_ERROR=
	watch_step() {
		if is_dead_lettered "$ob"; then return 0; fi
		a=$(sql_quiet "SELECT attempts || '|' || coalesce(last_error, '') FROM flyt.outbox WHERE id = $ob") || return 1
		if [ -n "$a" ]; then
			e=${a#*|}
			a=${a%%|*}
			if [ "$a" -gt "$MAX_SEEN" ]; then
				MAX_SEEN=$a
				SEEN_ERROR=$e
			fi
		fi
		return 1
	}
	wait_until "$secs" watch_step
}

BIG_STRING=$(head -c 3000 /dev/zero | tr '\0' x)
BIG_VALUE=$(jq -c --arg s "$BIG_STRING" '.valuePerKey.vedlegg = $s' <<<"$FIX_VALUE")
SMALL_VALUE='{"valuePerKey":{"a":"b"},"objectCollectionPerKey":{}}'
SMALL_HEADERS=$(jq -c '.fileIds = [] | .sourceApplicationInstanceId = "small"' <<<"$FIX_HEADERS")


# register_big — registers BIG_VALUE; sets BIG_ID, BIG_QUEUED_MS (commit
# time, ms), BIG_OB (outbox id of its instance-registered row) and
# BIG_PAYLOAD (that row's value).
register_big() {
	local out
	out=$(sql -v h="$FIX_HEADERS" -v v="$BIG_VALUE" "BEGIN;
SELECT test_register_unsendable(:'h'::jsonb, :'v'::jsonb) AS id \\gset
SELECT :id;
SELECT floor(extract(epoch FROM now()) * 1000)::bigint;
SELECT id FROM flyt.outbox WHERE key = :'id' AND event_name = 'instance-registered';
SELECT value FROM flyt.outbox WHERE key = :'id' AND event_name = 'instance-registered';
COMMIT;")
	BIG_ID=$(sed -n 1p <<<"$out")
	BIG_QUEUED_MS=$(sed -n 2p <<<"$out")
	BIG_OB=$(sed -n 3p <<<"$out")
	BIG_PAYLOAD=$(sed -n 4p <<<"$out")
}

metric_at_least() {
	local v
	v=$(metric_sum "$1")
	[ -n "$v" ] && awk -v v="$v" -v n="$2" 'BEGIN { exit !(v >= n) }'
}

# epoch_ms SQL_TIMESTAMP_EXPR — milliseconds since the epoch (floor).
epoch_ms() {
	sql "SELECT floor(extract(epoch FROM ($1)) * 1000)::bigint"
}

# =================================================================================
# Part 1: redelivery and dead letters (message.max.bytes=1000)
# =================================================================================

KAFKA_CONFIG="$NORMAL_KAFKA_CONFIG;message.max.bytes=1000"
broker_start
worker_cluster_start \
	-c "flyt_instance.redelivery_max_no = 2" \
	-c "flyt_instance.redelivery_millis = 50"
require_worker
unsendable
if wait_status_up 45; then
	pass "flyt_status()->>'status' becomes UP"
else
	bail "flyt_status()->>'status' becomes UP" "flyt_status(): $(show_status)"
fi

# --- 2. a message that can never be delivered is dead-lettered ---------------------

register_big
A_ID=$BIG_ID
A_OB=$BIG_OB
A_PAYLOAD=$BIG_PAYLOAD
note "big instance A: id $A_ID, instance-registered is outbox row $A_OB (${#A_PAYLOAD} bytes)"
check "A's instance-registered row is queued and bigger than 1000 bytes" \
	test -n "$A_OB" -a "${#A_PAYLOAD}" -gt 3000

A_DEAD=false
started=$SECONDS
if watch_outbox_row "$A_OB" "$STEP_WAIT"; then
	A_DEAD=true
	pass "A's instance-registered leaves flyt.outbox for flyt.dead_letter (in $((SECONDS - started)) s)"
else
	fail "A's instance-registered leaves flyt.outbox for flyt.dead_letter within ${STEP_WAIT}s" \
		"outbox: $(outbox_dump)" "dead letters: $(dead_letter_dump)" "server log: $(log_errors)"
fi
if [ "$MAX_SEEN" -ge 1 ]; then
	pass "the outbox row's attempts climb while it waits (seen: $MAX_SEEN)"
	check "the waiting row has a last_error" [ -n "$SEEN_ERROR" ]
	note "last_error: $SEEN_ERROR"
elif $A_DEAD && sql_is 3 "SELECT message_delivery_attempts FROM flyt.dead_letter WHERE outbox_id = $A_OB"; then
	pass "the outbox row's attempts climb (too fast to see in flyt.outbox; the dead letter says 3)"
else
	fail "the outbox row's attempts climb" "highest attempts seen: $MAX_SEEN" \
		"outbox: $(outbox_dump)" "server log: $(log_errors)"
fi

if $A_DEAD; then
	DL=$(sql -v p="$A_PAYLOAD" "SELECT jsonb_build_object(
		'topic', topic, 'transience', failure_transience, 'attempts', message_delivery_attempts,
		'error', failure_details->>'errorMessage', 'key', convert_from(message_key, 'UTF8'),
		'payload_equal', convert_from(original_message_payload, 'UTF8') = :'p',
		'original_message_id', original_message_id, 'kafka_offset', kafka_offset)
		FROM flyt.dead_letter WHERE outbox_id = $A_OB")
	note "dead letter of A: $(jq -c '.error' <<<"$DL"), $(($(epoch_ms "(SELECT created_at FROM flyt.dead_letter WHERE outbox_id = $A_OB)") - BIG_QUEUED_MS)) ms after it was queued (redelivery waits: 50 + 100 ms)"
	check_eq "dead letter: failure_transience TRANSIENT" TRANSIENT "$(jq -r .transience <<<"$DL")"
	check_eq "dead letter: message_delivery_attempts = 1 + redelivery_max_no = 3" 3 "$(jq -r .attempts <<<"$DL")"
	check_eq "dead letter: failure_details->>'errorMessage' is not empty" true \
		"$(jq '.error | type == "string" and length > 0' <<<"$DL")"
	check_eq "dead letter: original_message_payload is the message value" true "$(jq -r .payload_equal <<<"$DL")"
	check_eq "dead letter: topic is instance-registered" "$T_REGISTERED" "$(jq -r .topic <<<"$DL")"
	check_eq "dead letter: message_key is the instance id" "$A_ID" "$(jq -r .key <<<"$DL")"
	check_eq "dead letter: no kafka_offset (it came from the outbox)" null "$(jq -r .kafka_offset <<<"$DL")"
	if wait_until 5 metric_at_least flyt_instance_dead_lettered_total 1; then
		pass "flyt_metrics(): flyt_instance_dead_lettered_total >= 1"
	else
		fail "flyt_metrics(): flyt_instance_dead_lettered_total >= 1" "got: '$(metric_sum flyt_instance_dead_lettered_total)'"
	fi
	check_eq "flyt_status()->'dead_letters' = 1" 1 "$(status_field "->>'dead_letters'")"
else
	fail "dead letter checks of A skipped: A was not dead-lettered"
fi

# --- 3. a retry that dies: retry-request-error and RETRY_FAILED ----------------------

if $A_DEAD; then
	out=$(sql "BEGIN;
SELECT flyt_retry($A_ID) AS corr \\gset
SELECT :'corr';
SELECT id FROM flyt.outbox WHERE key = '$A_ID' AND event_name = 'instance-requested-for-retry';
COMMIT;")
	CORR=$(sed -n 1p <<<"$out")
	R_OB=$(sed -n 2p <<<"$out")
	note "flyt_retry($A_ID): correlationId $CORR, outbox row $R_OB"
	check "the retry row is queued" [ -n "$R_OB" ]
	started=$SECONDS
	R_DEAD=false
	if wait_until "$STEP_WAIT" is_dead_lettered "$R_OB"; then
		R_DEAD=true
		pass "the retry message is dead-lettered after its redeliveries (in $((SECONDS - started)) s)"
	else
		fail "the retry message is dead-lettered after its redeliveries" \
			"outbox: $(outbox_dump)" "dead letters: $(dead_letter_dump)" "server log: $(log_errors)"
	fi
	if $R_DEAD; then
		check_eq "retry dead letter: TRANSIENT with 3 attempts, topic instance-requested-for-retry" \
			"TRANSIENT|3|$T_RETRY" \
			"$(sql "SELECT failure_transience || '|' || message_delivery_attempts || '|' || topic FROM flyt.dead_letter WHERE outbox_id = $R_OB")"
	fi
	if wait_messages "$T_RETRY_ERROR" 1 "$STEP_WAIT"; then
		pass "an error.instance-retry-request-error message reaches Kafka"
	else
		fail "an error.instance-retry-request-error message reaches Kafka" \
			"outbox: $(outbox_dump)" "server log: $(log_errors)"
	fi
	F=$WORK/$T_RETRY_ERROR.json
	jcheck "retry-request-error: exactly one message" "$F" 'length == 1'
	jcheck "retry-request-error: value is the general system error" "$F" \
		'.[0].payload == $v' --arg v "$ERROR_VALUE"
	jcheck "retry-request-error: key is the instance id" "$F" '.[0].key == $id' --arg id "$A_ID"
	jcheck "retry-request-error: flow headers carry the retry's correlationId" "$F" \
		'.[0] | flow.correlationId == $c' --arg c "$CORR"
	jcheck "retry-request-error: flow headers are the stored ones (instanceId set)" "$F" \
		'.[0] | flow as $f | ($f.instanceId | tostring) == $id
			and ($f | del(.correlationId, .instanceId)) == ($fix | del(.correlationId, .instanceId))' \
		--arg id "$A_ID" --argjson fix "$FIX_HEADERS"
	check_eq "flyt_instance_history($A_ID) has one RETRY_FAILED row" 1 \
		"$(sql "SELECT count(*) FROM flyt_instance_history($A_ID) WHERE event_type = 'RETRY_FAILED'")"
	check_eq "flyt_instance_history($A_ID): RETRY_REQUESTED before RETRY_FAILED" "RETRY_REQUESTED RETRY_FAILED" \
		"$(sql "SELECT string_agg(event_type, ' ' ORDER BY version) FROM flyt_instance_history($A_ID) WHERE event_type LIKE 'RETRY%'")"
	# A's 3 failures and the retry's 3, nothing delivered in between: the
	# 5th consecutive failure opens the circuit; the error message closes it.
	if wait_until "$STEP_WAIT" sql_is t "SELECT flyt_status()->'kafka'->'circuit'->>'state' = 'CLOSED' AND (SELECT count(*) FROM flyt.outbox) = 0"; then
		pass "the outbox drains and the circuit is CLOSED again"
	else
		fail "the outbox drains and the circuit is CLOSED again" "outbox: $(outbox_dump)" "kafka: $(status_field "->'kafka'")"
	fi
	jcheck_status() {
		status_field "->'kafka'->'circuit'" >"$WORK/circuit.json" || echo '{}' >"$WORK/circuit.json"
		jcheck "$@"
	}
	jcheck_status "5 consecutive delivery failures opened the circuit (an OPEN event with a 'delivery failed' reason)" \
		"$WORK/circuit.json" 'any(.events[]; .state == "OPEN" and (.reason | test("deliver")))'
	jcheck_status "the delivered error message closed it (last event CLOSED)" \
		"$WORK/circuit.json" '.events[-1].state == "CLOSED"'
	if wait_until 5 metric_at_least flyt_instance_dead_lettered_total 2; then
		pass "flyt_metrics(): flyt_instance_dead_lettered_total >= 2"
	else
		fail "flyt_metrics(): flyt_instance_dead_lettered_total >= 2" "got: '$(metric_sum flyt_instance_dead_lettered_total)'"
	fi
else
	fail "retry dead-letter checks skipped: A was not dead-lettered"
fi

# --- 4. ordering while a big message backs off ---------------------------------------

# C backs off 1 s, then 2 s, before it is dead-lettered: a window in which
# what was sent meanwhile is seen on the topic while C's row still waits
# (the record timestamp is the event's time, so it cannot tell).  A new
# session shows the value once the postmaster reloaded, and the postmaster
# signalled the worker before that.
sql "ALTER SYSTEM SET flyt_instance.redelivery_millis = 1000" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_until 10 sql_is 1s "SHOW flyt_instance.redelivery_millis" || fail "redelivery_millis = 1000 is loaded"

# One transaction: big C (instance-registered fails), C dispatched (its
# instance-deleted, small, same key, must wait for C's registered row),
# small B (another key: must not wait).
out=$(sql -v h="$FIX_HEADERS" -v v="$BIG_VALUE" -v sh="$SMALL_HEADERS" -v sv="$SMALL_VALUE" "BEGIN;
SELECT test_register_unsendable(:'h'::jsonb, :'v'::jsonb) AS c \\gset
SELECT :c;
SELECT id FROM flyt.outbox WHERE key = :'c' AND event_name = 'instance-registered';
SELECT flyt_instance_dispatched(jsonb_set(:'h'::jsonb, '{instanceId}', to_jsonb(:c::bigint))) AS dispatched \\gset
SELECT :'dispatched';
SELECT id FROM flyt.outbox WHERE key = :'c' AND event_name = 'instance-deleted';
SELECT flyt_register_instance(:'sh'::jsonb, :'sv'::jsonb) AS b \\gset
SELECT :b;
COMMIT;")
C_ID=$(sed -n 1p <<<"$out")
C_OB=$(sed -n 2p <<<"$out")
C_DISPATCHED=$(sed -n 3p <<<"$out")
C_DEL_OB=$(sed -n 4p <<<"$out")
B_ID=$(sed -n 5p <<<"$out")
note "big C: id $C_ID (registered row $C_OB, deleted row $C_DEL_OB); small B: id $B_ID"
check "C dispatched in the same transaction (instance-deleted queued)" \
	test "$C_DISPATCHED" = t -a -n "$C_DEL_OB"

b_arrived() {
	consume_all "$T_REGISTERED" | jq -e --arg k "$B_ID" 'select(.key == $k)' >/dev/null
}
started=$SECONDS
# The record timestamp is when the event happened (the transaction), not
# when it was sent: order is proven by what the topic shows while C's row
# is still in the outbox (the topic read first, the outbox after).
if wait_until "$STEP_WAIT" b_arrived; then
	pass "small B (another key) is delivered while big C backs off (in $((SECONDS - started)) s)"
	if [ "$(sql "SELECT count(*) FROM flyt.outbox WHERE id = $C_OB")" = 1 ]; then
		pass "B was on Kafka while C's instance-registered still waited in the outbox"
	else
		fail "B was on Kafka while C's instance-registered still waited in the outbox" "C's row was gone already"
	fi
else
	fail "small B (another key) is delivered while big C backs off" \
		"outbox: $(outbox_dump)" "server log: $(log_errors)"
fi

# C's instance-deleted must not be on Kafka while C's instance-registered
# still waits: every poll reads the topic first, then the outbox.
C_OVERTAKEN=false
C_OVERTAKEN_HOW=
c_dead_not_overtaken() {
	local seen
	seen=$(consume_all "$T_DELETED" | jq -c --arg k "$C_ID" 'select(.key == $k)')
	if [ -n "$seen" ] && [ "$(sql_quiet "SELECT count(*) FROM flyt.outbox WHERE id = $C_OB")" = 1 ]; then
		C_OVERTAKEN=true
		C_OVERTAKEN_HOW="on Kafka: $seen; outbox then: $(outbox_dump)"
	fi
	is_dead_lettered "$C_OB"
}
C_DEAD=false
if $A_DEAD; then
	if wait_until "$STEP_WAIT" c_dead_not_overtaken; then
		C_DEAD=true
		pass "C's instance-registered is dead-lettered"
	else
		fail "C's instance-registered is dead-lettered" "outbox: $(outbox_dump)" "server log: $(log_errors)"
	fi
else
	fail "C dead-letter check skipped: A was not dead-lettered"
fi

if $C_DEAD; then
	del_seen() {
		consume_all "$T_DELETED" | jq -e --arg k "$C_ID" 'select(.key == $k)' >/dev/null
	}
	if wait_until "$STEP_WAIT" del_seen; then
		pass "C's instance-deleted is delivered after C's dead letter"
	else
		fail "C's instance-deleted is delivered after C's dead letter" "outbox: $(outbox_dump)"
	fi
	if $C_OVERTAKEN; then
		fail "same key: instance-deleted of C did not overtake C's waiting instance-registered" \
			"C's instance-deleted was on Kafka while its instance-registered row was still in the outbox" \
			"$C_OVERTAKEN_HOW"
	else
		pass "same key: instance-deleted of C did not overtake C's waiting instance-registered"
	fi
else
	fail "same key ordering not decided: C was not dead-lettered"
fi

# =================================================================================
# Part 2: the circuit breaker, on a fresh cluster with the usual Kafka settings
# =================================================================================

without_broker_fds cluster_destroy || true
KAFKA_CONFIG=$NORMAL_KAFKA_CONFIG
# redelivery_millis is the first open interval: 3 s keeps OPEN visible to a
# 0.2 s poll, and the outage stays far below message.timeout.ms (30 s).
worker_cluster_start -c "flyt_instance.redelivery_millis = 3000"
if wait_status_up 45; then
	pass "second cluster (usual Kafka settings): status UP"
else
	bail "second cluster (usual Kafka settings): status UP" "flyt_status(): $(show_status)"
fi

S_ID=$(sql -v h="$SMALL_HEADERS" -v v="$SMALL_VALUE" "SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)")
if wait_until "$WAIT" outbox_is 0; then
	pass "small instance S registered and delivered"
else
	fail "small instance S registered and delivered" "outbox: $(outbox_dump)" "server log: $(log_errors)"
fi
check_eq "circuit CLOSED before the outage" CLOSED "$(status_field "->'kafka'->'circuit'->>'state'")"
EVENTS_BEFORE=$(sql "SELECT jsonb_array_length(flyt_status()->'kafka'->'circuit'->'events')")

broker_cmd down || true
check_eq "broker goes down" "ok down all" "$reply"
down_at=$SECONDS
corrs=()
for _ in 1 2 3; do
	corrs+=("$(sql "SELECT flyt_retry($S_ID)")")
done
CORRS=$(printf '%s\n' "${corrs[@]}" | jq -R . | jq -sc .)
if wait_until 60 sql_is OPEN "SELECT flyt_status()->'kafka'->'circuit'->>'state'"; then
	pass "all brokers down: circuit becomes OPEN (in $((SECONDS - down_at)) s)"
else
	fail "all brokers down: circuit becomes OPEN" "kafka: $(status_field "->'kafka'")"
fi
status_field "->'kafka'->'circuit'" >"$WORK/circuit.json" || echo '{}' >"$WORK/circuit.json"
jcheck "circuit events: a new OPEN entry with a reason" "$WORK/circuit.json" \
	'[.events[$n:][] | select(.state == "OPEN")] | length >= 1 and all(.[]; (.reason | type) == "string" and (.reason | length) > 0)' \
	--argjson n "$EVENTS_BEFORE"
note "OPEN reason: $(jval "$WORK/circuit.json" '[.events[] | select(.state == "OPEN")][-1].reason')"
check_eq "status DOWN while the circuit is open" DOWN "$(status_field "->>'status'")"
if holds_for 2 outbox_is 3; then
	pass "the outbox keeps the three retries while the broker is down (2 s)"
else
	fail "the outbox keeps the three retries while the broker is down" "outbox: $(outbox_dump)"
fi

broker_cmd up || true
check_eq "broker comes up" "ok up all" "$reply"
up_at=$SECONDS
if wait_until 60 sql_is CLOSED "SELECT flyt_status()->'kafka'->'circuit'->>'state'"; then
	pass "after up the circuit is CLOSED again (in $((SECONDS - up_at)) s)"
else
	fail "after up the circuit is CLOSED again" "kafka: $(status_field "->'kafka'")"
fi
status_field "->'kafka'->'circuit'" >"$WORK/circuit.json" || echo '{}' >"$WORK/circuit.json"
jcheck "circuit events after the outage: OPEN, then HALF_OPEN, then CLOSED last" "$WORK/circuit.json" \
	'[.events[$n:][] | .state] as $s
	 | ($s | index("OPEN")) as $o
	 | ($o != null) and (($s[$o:] | index("HALF_OPEN")) != null) and ($s[-1] == "CLOSED")' \
	--argjson n "$EVENTS_BEFORE"
if wait_until 60 outbox_is 0; then
	pass "the outbox drains after up"
else
	fail "the outbox drains after up" "outbox: $(outbox_dump)"
fi
if wait_messages "$T_RETRY" 3 "$WAIT"; then
	jcheck "the three retries reach Kafka in call order" "$WORK/$T_RETRY.json" \
		'[.[] | flow.correlationId | select(. as $c | $corrs | index($c))] == $corrs' --argjson corrs "$CORRS"
else
	fail "the three retries reach Kafka" "topic: $(jq -c . "$WORK/$T_RETRY.json" | head -c 800)"
fi
circuit_metric_is_0() {
	[ "$(metric_sum flyt_instance_circuit_state)" = 0 ]
}
if wait_until 10 circuit_metric_is_0; then
	pass "flyt_metrics(): flyt_instance_circuit_state 0"
else
	fail "flyt_metrics(): flyt_instance_circuit_state 0" \
		"got: $(sql_quiet 'SELECT flyt_metrics()' | grep '^flyt_instance_circuit_state' || true)"
fi
if wait_status_up 30; then
	pass "status UP again"
else
	fail "status UP again" "flyt_status(): $(show_status)"
fi
check_eq "no dead letters from the outage" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"

finish
