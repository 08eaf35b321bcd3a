#!/usr/bin/env bash
#
# dead_letters.sh — dead letters redriven once their cause is fixed (issue
# 15), against the embedded broker:
#
#   1. the producer is given message.max.bytes=1000: an instance-registered
#      of 3 kB (queued by test_register_unsendable, as worker_redelivery.sh
#      does) is refused on every delivery and dead-lettered;
#   2. the cause is fixed: kafka_config raises message.max.bytes, the worker
#      reconnects; flyt_dead_letter_redrive queues it again and it reaches
#      Kafka exactly once, with its original flyt.event-id; a second redrive
#      does nothing;
#   3. a consumed instance-received over max_instance_bytes (1kB here) is
#      dead-lettered with 54000; after the limit is raised its redrive
#      registers the instance once and instance-registered reaches Kafka;
#   4. a consumed instance-received that is not JSON: its redrive fails
#      again, it stays dead with the new reason;
#   5. the counters of flyt_metrics().
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2317,SC2153,SC2154
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 200

dl_teardown() {
	without_broker_fds cluster_destroy || true
	it_teardown
}
cluster_trap dl_teardown

NORMAL_KAFKA_CONFIG=$KAFKA_CONFIG
STEP_WAIT=20

dead_letter_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(to_jsonb(d) - 'payload' - 'headers' - 'message_key' ORDER BY id), '[]') FROM flyt_dead_letters(max_rows => 100) d"
}
outbox_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'event', event_name, 'key', key, 'attempts', attempts, 'last_error', last_error) ORDER BY id), '[]') FROM flyt.outbox"
}
outbox_is() {
	sql_is "$1" "SELECT count(*) FROM flyt.outbox"
}
# records_with_event_id TOPIC EVENT_ID — how many records of the topic carry it.
records_with_event_id() {
	consume_all "$1" | jq -s --arg e "$2" "$JQ_DEFS"' [.[] | select(eventid == $e)] | length'
}

BIG_STRING=$(head -c 3000 /dev/zero | tr '\0' x)
BIG_VALUE=$(jq -c --arg s "$BIG_STRING" '.valuePerKey.vedlegg = $s' <<<"$FIX_VALUE")

KAFKA_CONFIG="$NORMAL_KAFKA_CONFIG;message.max.bytes=1000"
broker_start
worker_cluster_start \
	-c "flyt_instance.redelivery_max_no = 1" \
	-c "flyt_instance.redelivery_millis = 50" \
	-c "flyt_instance.max_instance_bytes = '1kB'"
require_worker
if wait_status_up 45; then
	pass "flyt_status()->>'status' becomes UP"
else
	bail "flyt_status()->>'status' becomes UP" "flyt_status(): $(show_status)"
fi

# What flyt_register_instance does, without its check that the message fits
# into message.max.bytes: a row the producer refuses every time.
unsendable

# --- 1. an outbox message dead-lettered -----------------------------------------------

out=$(sql -v h="$FIX_HEADERS" -v v="$BIG_VALUE" "BEGIN;
SELECT test_register_unsendable(:'h'::jsonb, :'v'::jsonb) AS id \\gset
SELECT :id;
SELECT id FROM flyt.outbox WHERE key = :'id';
SELECT headers->>'flyt.event-id' FROM flyt.outbox WHERE key = :'id';
COMMIT;")
A_ID=$(sed -n 1p <<<"$out")
A_OB=$(sed -n 2p <<<"$out")
A_EVENT=$(sed -n 3p <<<"$out")
note "big instance $A_ID: outbox row $A_OB, flyt.event-id $A_EVENT"
if wait_until "$STEP_WAIT" sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE outbox_id = $A_OB AND status = 'dead'"; then
	pass "the 3 kB instance-registered is dead-lettered (message.max.bytes=1000)"
else
	bail "the 3 kB instance-registered is dead-lettered" "outbox: $(outbox_dump)" "dead letters: $(dead_letter_dump)"
fi
A_DL=$(sql "SELECT id FROM flyt.dead_letter WHERE outbox_id = $A_OB")
check_eq "flyt_dead_letters() shows it dead, with its flyt.event-id" "dead|$A_EVENT" \
	"$(sql "SELECT dead_letter_status || '|' || event_id FROM flyt_dead_letters() WHERE id = $A_DL")"
check_eq "nothing of it is on Kafka" 0 "$(records_with_event_id "$T_REGISTERED" "$A_EVENT")"

# --- 2. the cause fixed, the redrive reaches Kafka exactly once ------------------------

sql "ALTER SYSTEM SET flyt_instance.kafka_config = '$NORMAL_KAFKA_CONFIG;message.max.bytes=1000000'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until "$STEP_WAIT" sql_is "message.max.bytes=1000000" "SELECT substring(current_setting('flyt_instance.kafka_config') from 'message.max.bytes=[0-9]+')"; then
	pass "kafka_config raises message.max.bytes"
else
	fail "kafka_config raises message.max.bytes" "$(sql_quiet "SHOW flyt_instance.kafka_config")"
fi
# The worker has let go of the old producer once it says so; only then can
# nothing be sent with the old limit.
reconnected() {
	grep -q 'flyt_instance: Kafka settings changed; reconnecting' "$CLUSTER_LOG"
}
if wait_until "$STEP_WAIT" reconnected; then
	pass "the worker reconnects with the new kafka_config"
else
	fail "the worker reconnects with the new kafka_config" "server log: $(tail -n 5 "$CLUSTER_LOG" | tr '\n' ' ')"
fi
if wait_status_up 45; then
	pass "the worker is UP with the new setting"
else
	fail "the worker is UP with the new setting" "flyt_status(): $(show_status)"
fi
check_eq "flyt_dead_letter_redrive: redriven" redriven "$(sql "SELECT flyt_dead_letter_redrive($A_DL)")"
delivered_once() {
	outbox_is 0 && [ "$(records_with_event_id "$T_REGISTERED" "$A_EVENT")" = 1 ]
}
if wait_until "$STEP_WAIT" delivered_once; then
	pass "the redriven instance-registered reaches Kafka, once, with its flyt.event-id"
else
	fail "the redriven instance-registered reaches Kafka once" \
		"records with the event id: $(records_with_event_id "$T_REGISTERED" "$A_EVENT")" "outbox: $(outbox_dump)"
fi
snapshot "$T_REGISTERED"
jcheck "... keyed by the instance id, its value the instance" "$WORK/$T_REGISTERED.json" \
	'[.[] | select(eventid == $e)][0] | .key == $id and (.payload | fromjson | .id | tostring) == $id' \
	--arg e "$A_EVENT" --arg id "$A_ID"
check_eq "a second redrive: already_redriven" already_redriven "$(sql "SELECT flyt_dead_letter_redrive($A_DL)")"
check_eq "... which queues nothing" 0 "$(sql "SELECT count(*) FROM flyt.outbox")"
check_eq "Kafka still has it once" 1 "$(records_with_event_id "$T_REGISTERED" "$A_EVENT")"
check_eq "the history of instance $A_ID ends with REDRIVEN by the caller" "REDRIVEN postgres" \
	"$(sql "SELECT event_type || ' ' || requested_by FROM flyt_instance_history($A_ID) ORDER BY version DESC LIMIT 1")"

# --- 3. a consumed message dead-lettered, the limit raised, redriven --------------------

B_HEADERS=$(jq -c '.sourceApplicationInstanceId = "dl-big"' <<<"$FIX_HEADERS")
produce "$T_RECEIVED" dl-big "$BIG_VALUE" -H "$H_FLOW=$B_HEADERS" -H "$H_EVENT_ID=dl-big-1" ||
	fail "kcat produces the big instance-received"
if wait_until "$STEP_WAIT" sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND failure_details->>'sqlstate' = '54000'"; then
	pass "an instance-received over max_instance_bytes is dead-lettered (54000)"
else
	bail "an instance-received over max_instance_bytes is dead-lettered" "dead letters: $(dead_letter_dump)"
fi
B_DL=$(sql "SELECT id FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND failure_details->>'sqlstate' = '54000'")
B_POS=$(sql "SELECT kafka_partition || '/' || kafka_offset FROM flyt.dead_letter WHERE id = $B_DL")
check_eq "while the limit holds, its redrive fails again" failed "$(sql "SELECT flyt_dead_letter_redrive($B_DL)")"
sql "ALTER SYSTEM SET flyt_instance.max_instance_bytes = '16MB'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until "$STEP_WAIT" sql_is 16MB "SHOW flyt_instance.max_instance_bytes"; then
	pass "max_instance_bytes raised to 16MB"
else
	fail "max_instance_bytes raised to 16MB"
fi
check_eq "after the limit is raised: redriven" redriven "$(sql "SELECT flyt_dead_letter_redrive($B_DL)")"
B_ID=$(sql "SELECT instance_id FROM flyt.dead_letter_action WHERE dead_letter_id = $B_DL AND action = 'redriven'")
check_eq "one instance is registered from it" 1 \
	"$(sql "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id = 'dl-big'")"
check_eq "the dead letter keeps its partition and offset" "$B_POS" \
	"$(sql "SELECT kafka_partition || '/' || kafka_offset FROM flyt.dead_letter WHERE id = $B_DL")"
registered_on_kafka() {
	consume_all "$T_REGISTERED" | jq -s -e --arg k "$B_ID" '[.[] | select(.key == $k)] | length == 1' >/dev/null
}
if [ -n "$B_ID" ] && wait_until "$STEP_WAIT" registered_on_kafka; then
	pass "its instance-registered reaches Kafka once"
else
	fail "its instance-registered reaches Kafka once" "instance: '$B_ID'" "outbox: $(outbox_dump)"
fi
check_eq "its history: REGISTERED, REDRIVEN" "REGISTERED REDRIVEN" \
	"$(sql "SELECT string_agg(event_type, ' ' ORDER BY version) FROM flyt_instance_history(${B_ID:-0})" 2>/dev/null || true)"
check_eq "a second redrive: already_redriven" already_redriven "$(sql "SELECT flyt_dead_letter_redrive($B_DL)")"
check_eq "still one instance" 1 \
	"$(sql "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id = 'dl-big'")"

# --- 4. a bad consumed message stays dead -------------------------------------------------

C_HEADERS=$(jq -c '.sourceApplicationInstanceId = "dl-bad"' <<<"$FIX_HEADERS")
produce "$T_RECEIVED" dl-bad 'not json' -H "$H_FLOW=$C_HEADERS" || fail "kcat produces the bad instance-received"
C_WHERE="topic = '$T_RECEIVED' AND kafka_offset IS NOT NULL AND convert_from(original_message_payload, 'UTF8') = 'not json'"
if wait_until "$STEP_WAIT" sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE $C_WHERE"; then
	pass "an instance-received that is not JSON is dead-lettered"
else
	bail "an instance-received that is not JSON is dead-lettered" "dead letters: $(dead_letter_dump)"
fi
C_DL=$(sql "SELECT id FROM flyt.dead_letter WHERE $C_WHERE")
sql "UPDATE flyt.dead_letter SET failure_details = failure_details || '{\"errorMessage\": \"an older reason\"}' WHERE id = $C_DL" >/dev/null
check_eq "its redrive: failed" failed "$(sql "SELECT flyt_dead_letter_redrive($C_DL)")"
check_eq "it stays dead, with the new reason, 2 attempts" "dead|22023|2" \
	"$(sql "SELECT status || '|' || (failure_details->>'sqlstate') || '|' || message_delivery_attempts FROM flyt.dead_letter WHERE id = $C_DL")"
check "the new reason replaced the old one, which the action row keeps" sql_is t \
	"SELECT d.failure_details->>'errorMessage' <> 'an older reason' AND a.replaced_failure_details->>'errorMessage' = 'an older reason'
	 FROM flyt.dead_letter d JOIN flyt.dead_letter_action a ON a.dead_letter_id = d.id WHERE d.id = $C_DL"
check_eq "no instance is registered from it" 0 \
	"$(sql "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id = 'dl-bad'")"

# --- 5. metrics -----------------------------------------------------------------------------

check_eq "flyt_instance_dead_letters_redriven_total 2" 2 "$(metric_sum flyt_instance_dead_letters_redriven_total)"
check_eq "flyt_instance_dead_letters_redrive_failed_total 2" 2 "$(metric_sum flyt_instance_dead_letters_redrive_failed_total)"
check_eq "flyt_instance_dead_letters 1 (the bad message)" 1 "$(metric_sum flyt_instance_dead_letters)"
check_eq "flyt_status()->'dead_letter_actions'->'by_topic_and_reason'" \
	"[{\"count\": 1, \"topic\": \"$T_RECEIVED\", \"reason\": \"22023\"}]" \
	"$(status_field "->'dead_letter_actions'->'by_topic_and_reason'")"

finish
