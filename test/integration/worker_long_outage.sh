#!/usr/bin/env bash
#
# worker_long_outage.sh — a Kafka outage far longer than
# redelivery_max_no × message.timeout.ms dead-letters nothing.
#
# Only a delivery refused for what the message is (too large, invalid, not
# authorised) counts toward flyt_instance.redelivery_max_no.  Timeouts and
# transport errors once counted too: with the defaults a ~20-minute outage
# dead-lettered healthy messages (instance-registered never reached Flyt,
# retries became RETRY_FAILED).  Here redelivery_max_no = 2 and
# message.timeout.ms = 1000, and the broker stays down 15 s: every
# half-open probe times out, and before the fix the oldest rows were
# dead-lettered within ~5 s.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

OUTAGE=15
N=5

broker_start
KAFKA_CONFIG="$KAFKA_CONFIG;message.timeout.ms=1000"
worker_cluster_start -c "flyt_instance.redelivery_max_no = 2" -c "flyt_instance.redelivery_millis = 100"
require_worker
expect_status_up
ID=$(register_fixture)
wait_messages "$T_REGISTERED" 1 || fail "instance-registered is delivered before the outage"

broker_cmd down || true
check_eq "broker goes down" "ok down all" "$reply"
for _ in $(seq "$N"); do
	sql "SELECT flyt_retry($ID)" >/dev/null
done
sleep "$OUTAGE" # the outage itself: nothing to wait for but time
tries=$(sql "SELECT coalesce(sum(attempts), 0) || ' attempts, last error ' || coalesce(max(last_error), '-') FROM flyt.outbox")
note "after ${OUTAGE} s down: $tries"
check_eq "no dead letter during the outage" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"
check_eq "all $N retries still queued" "$N" "$(sql "SELECT count(*) FROM flyt.outbox")"
check "the oldest row says why it waits" sql_is t "SELECT last_error IS NOT NULL FROM flyt.outbox ORDER BY id LIMIT 1"
check_eq "no RETRY_FAILED recorded" 0 "$(sql "SELECT count(*) FROM flyt_instance_history($ID) WHERE event_type = 'RETRY_FAILED'")"

broker_cmd up || true
check_eq "broker comes up" "ok up all" "$reply"
if wait_until 60 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "after the outage every retry is delivered"
else
	fail "after the outage every retry is delivered" "flyt_status(): $(show_status)"
fi
wait_messages "$T_RETRY" "$N" 30 || true
check_eq "$N retry messages on Kafka" "$N" "$(jval "$WORK/$T_RETRY.json" '[.[] | flow.correlationId] | unique | length')"
check_eq "still no dead letter" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"
check_eq "nothing on the retry-error topic" 0 "$(topic_count "$T_RETRY_ERROR")"

finish
