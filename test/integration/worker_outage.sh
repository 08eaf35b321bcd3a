#!/usr/bin/env bash
#
# worker_outage.sh — the worker through a broker outage and with Kafka
# switched off:
#
#   - broker `down` while connected: flyt_status() turns DOWN, retries queued
#     meanwhile stay in flyt.outbox; after `up` they are all delivered, in
#     outbox-id order (increasing flyt.event-id, correlationIds in call
#     order), the outbox empties and the status is UP again;
#   - the same while idle (nothing queued): the worker probes the brokers,
#     and the half-open circuit with brokers answering is UP within seconds
#     of `up`, before any message is sent; the next message closes it;
#   - flyt_instance.kafka_bootstrap_servers emptied (ALTER SYSTEM + reload):
#     DOWN with a reason naming kafka, state kafka_off, rows wait; reset +
#     reload: delivered, UP.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2119,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 420

outbox_count() {
	sql "SELECT count(*) FROM flyt.outbox"
}

outbox_is() {
	sql_is "$1" "SELECT count(*) FROM flyt.outbox"
}

outbox_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'topic', topic, 'attempts', attempts, 'next_attempt_at', next_attempt_at, 'last_error', last_error) ORDER BY id), '[]') FROM flyt.outbox"
}

status_is() {
	sql_is "$1" "SELECT flyt_status()->>'status'"
}

# json_array WORD... — a JSON array of strings.
json_array() {
	printf '%s\n' "$@" | jq -R . | jq -sc .
}

# retry_checks NAME N CORRS_JSON EVENT_IDS_JSON — the retry topic holds
# exactly N messages, in outbox-id order, with these correlationIds.
retry_checks() {
	local name=$1 n=$2 corrs=$3 ids=$4 f
	wait_messages "$T_RETRY" "$n" 60 || fail "$name: $n retry messages on $T_RETRY"
	f=$WORK/$T_RETRY.json
	jcheck "$name: exactly $n messages on the retry topic" "$f" 'length == $n' --argjson n "$n"
	jcheck "$name: flyt.event-id values are distinct UUIDs" "$f" \
		'[.[] | eventid] as $e | ($e | length) > 0 and all($e[]; isuuid) and ($e | unique | length) == ($e | length)'
	jcheck "$name: flyt.event-id values are those of the outbox rows, in outbox order" "$f" '[.[] | eventid] == $ids' --argjson ids "$ids"
	jcheck "$name: correlationIds in the order of the flyt_retry calls" "$f" \
		'[.[] | flow.correlationId] == $c' --argjson c "$corrs"
	jcheck "$name: every value is the DTO" "$f" 'all(.[]; .payload | fromjson == $dto)' --argjson dto "$DTO"
}

broker_start
worker_cluster_start -c "flyt_instance.redelivery_millis = 200"
require_worker

if wait_status_up 45; then
	pass "flyt_status()->>'status' becomes UP"
else
	bail "flyt_status()->>'status' becomes UP" "flyt_status(): $(show_status)"
fi

ID=$(sql -v h="$FIX_HEADERS" -v v="$FIX_VALUE" \
	"SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)")
DTO=$(sql "SELECT flyt_instance($ID)")
if wait_until "$WAIT" outbox_is 0; then
	pass "instance-registered is delivered while connected"
else
	fail "instance-registered is delivered while connected" "outbox: $(outbox_dump)"
fi
check_eq "kafka connected while up" true "$(status_field "->'kafka'->>'connected'")"

# --- broker down --------------------------------------------------------------------

broker_cmd down || true
check_eq "broker goes down" "ok down all" "$reply"

corrs=()
for i in 1 2 3; do
	corrs+=("$(sql "SELECT flyt_retry($ID)")")
done
CORRS=$(json_array "${corrs[@]}")
IDS=$(sql "SELECT coalesce(jsonb_agg(headers->>'flyt.event-id' ORDER BY id), '[]') FROM flyt.outbox WHERE topic = '$T_RETRY'")
check_eq "three retry rows queued" 3 "$(jq length <<<"$IDS")"

if wait_until 60 status_is DOWN; then
	pass "status becomes DOWN while the broker is down"
else
	fail "status becomes DOWN while the broker is down" "flyt_status(): $(show_status)"
fi
REASON=$(status_field "->>'reason'")
note "reason while the broker is down: $REASON"
note "kafka while down: $(status_field "->'kafka'")"
check "status DOWN has a reason" [ -n "$REASON" ]
if wait_until "$WAIT" sql_is false "SELECT flyt_status()->'kafka'->>'connected'"; then
	pass "kafka.connected becomes false while all brokers are down"
else
	fail "kafka.connected becomes false while all brokers are down" "kafka: $(status_field "->'kafka'")"
fi
check_eq "the outbox keeps the three rows" 3 "$(outbox_count)"
if holds_for 3 outbox_is 3; then
	pass "the outbox keeps the three rows while the broker stays down (3 s)"
else
	fail "the outbox keeps the three rows while the broker stays down (3 s)" "outbox: $(outbox_dump)"
fi
check_eq "still DOWN after 3 s" DOWN "$(status_field "->>'status'")"
check_eq "no dead letters from the outage" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"

# --- broker up --------------------------------------------------------------------------

broker_cmd up || true
check_eq "broker comes up" "ok up all" "$reply"
up_at=$SECONDS
if wait_until 120 outbox_is 0; then
	pass "after up the outbox empties (in $((SECONDS - up_at)) s)"
else
	fail "after up the outbox empties" "outbox: $(outbox_dump)" "flyt_status(): $(show_status)"
fi
retry_checks "after the outage" 3 "$CORRS" "$IDS"
if wait_status_up 60; then
	pass "status returns to UP"
else
	fail "status returns to UP" "flyt_status(): $(show_status)"
fi
check_eq "circuit is CLOSED again" CLOSED "$(status_field "->'kafka'->'circuit'->>'state'")"
check_eq "no dead letters after the outage" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"

# --- an outage while idle ------------------------------------------------------------------
# Nothing waits in the outbox, so no message can close a half-open circuit:
# the worker probes the brokers instead, and a half-open circuit whose
# brokers answer is UP (it once stayed DOWN until the next message).

RETRIES_BEFORE=$(topic_count "$T_RETRY")
broker_cmd down || true
check_eq "idle: broker goes down" "ok down all" "$reply"
if wait_until 60 status_is DOWN; then
	pass "idle: status becomes DOWN while the broker is down"
else
	fail "idle: status becomes DOWN while the broker is down" "flyt_status(): $(show_status)"
fi
if wait_until 30 sql_is t "SELECT flyt_status()->'kafka'->'circuit'->>'state' <> 'CLOSED'"; then
	pass "idle: the circuit opens"
else
	fail "idle: the circuit opens" "kafka: $(status_field "->'kafka'")"
fi
broker_cmd up || true
check_eq "idle: broker comes up" "ok up all" "$reply"
up_at=$SECONDS
if wait_status_up 20; then
	pass "idle: status UP again $((SECONDS - up_at)) s after the broker came back, with nothing sent"
else
	fail "idle: status UP again within 20 s with nothing sent" "flyt_status(): $(show_status)"
fi
note "idle recovery: circuit $(status_field "->'kafka'->'circuit' #- '{events}'")"
check_eq "idle: the circuit is still HALF_OPEN (no message closed it)" HALF_OPEN \
	"$(status_field "->'kafka'->'circuit'->>'state'")"
check_eq "idle: the circuit reports its brokers reachable" true \
	"$(status_field "->'kafka'->'circuit'->>'reachable'")"
check_eq "idle: nothing was sent meanwhile" "$RETRIES_BEFORE" "$(topic_count "$T_RETRY")"
check_eq "idle: the outbox is empty" 0 "$(outbox_count)"

# The next message closes the circuit.  (Its outbox id is read in the same
# transaction: the worker may send and delete the row right after commit.)
{
	read -r corr
	read -r outbox_id
} < <(sql "BEGIN; SELECT flyt_retry($ID); SELECT headers->>'flyt.event-id' FROM flyt.outbox ORDER BY id DESC LIMIT 1; COMMIT;")
corrs+=("$corr")
CORRS=$(json_array "${corrs[@]}")
IDS=$(jq -c --arg id "$outbox_id" '. + [$id]' <<<"$IDS")
if wait_until 30 sql_is CLOSED "SELECT flyt_status()->'kafka'->'circuit'->>'state'"; then
	pass "idle: the next message closes the circuit"
else
	fail "idle: the next message closes the circuit" "flyt_status(): $(show_status)"
fi
retry_checks "after the idle outage" 4 "$CORRS" "$IDS"

# --- Kafka switched off -------------------------------------------------------------------

sql "ALTER SYSTEM SET flyt_instance.kafka_bootstrap_servers = ''" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until "$WAIT" sql_is t \
	"SELECT flyt_status()->>'status' = 'DOWN' AND flyt_status()->>'reason' ILIKE '%kafka%'"; then
	pass "empty kafka_bootstrap_servers: DOWN with a reason mentioning kafka"
else
	fail "empty kafka_bootstrap_servers: DOWN with a reason mentioning kafka" "flyt_status(): $(show_status)"
fi
note "reason with Kafka off: $(status_field "->>'reason'")"
if wait_until 10 sql_is kafka_off "SELECT flyt_status()->'worker'->>'state'"; then
	pass "worker state is kafka_off"
else
	fail "worker state is kafka_off" "worker: $(status_field "->'worker'")"
fi

for i in 5 6; do
	corrs+=("$(sql "SELECT flyt_retry($ID)")")
done
CORRS=$(json_array "${corrs[@]}")
IDS=$(jq -c --argjson more "$(sql "SELECT coalesce(jsonb_agg(headers->>'flyt.event-id' ORDER BY id), '[]') FROM flyt.outbox WHERE topic = '$T_RETRY'")" \
	'. + $more' <<<"$IDS")
check_eq "two more retry rows queued" 2 "$(outbox_count)"
if holds_for 3 outbox_is 2; then
	pass "with Kafka off the rows wait in the outbox (3 s)"
else
	fail "with Kafka off the rows wait in the outbox (3 s)" "outbox: $(outbox_dump)"
fi
check_eq "nothing more on the retry topic while Kafka is off" 4 "$(topic_count "$T_RETRY")"

sql "ALTER SYSTEM RESET flyt_instance.kafka_bootstrap_servers" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
on_at=$SECONDS
if wait_until 60 outbox_is 0; then
	pass "bootstrap servers set again: the outbox empties (in $((SECONDS - on_at)) s)"
else
	fail "bootstrap servers set again: the outbox empties" "outbox: $(outbox_dump)" "flyt_status(): $(show_status)"
fi
retry_checks "after Kafka is back" 6 "$CORRS" "$IDS"
if wait_status_up 60; then
	pass "status UP again with Kafka configured"
else
	fail "status UP again with Kafka configured" "flyt_status(): $(show_status)"
fi
check_eq "worker state running again" running "$(status_field "->'worker'->>'state'")"

finish
