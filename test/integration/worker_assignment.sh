#!/usr/bin/env bash
#
# worker_assignment.sh — flyt_status() counts a consumer that has no
# partitions: a worker whose group hands every partition to another member
# consumes nothing, and once that lasts longer than
# flyt_instance.consumer_assignment_grace the status is DOWN, with the
# consumer's assignment state and since when it has waited.  (It once said
# UP with "partitions": [] for as long as the stall lasted.)
#
# Another member of the worker's group (kcat -G with a client.id that sorts
# first, so the range assignor gives it every partition) takes the
# partitions; when it leaves, the worker gets them back and is UP again,
# and consumes.
#
# Own broker, cluster and kcat; all always stopped.  Prints ok/not ok lines
# and "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 240

GROUP=fint-flyt-instance-service
holder_pid=

holder_stop() {
	if [ -n "$holder_pid" ]; then
		kill -TERM "$holder_pid" 2>/dev/null || true
		wait "$holder_pid" 2>/dev/null || true
		holder_pid=
	fi
}
teardown() {
	holder_stop
	it_teardown
}
cluster_trap teardown

assignment_state() {
	status_field "->'consumer'->'assignment'->>'state'"
}

broker_start
worker_cluster_start -c "flyt_instance.consumer_assignment_grace = '2s'"
require_worker

expect_status_up
if wait_until "$WAIT" sql_is assigned "SELECT flyt_status()->'consumer'->'assignment'->>'state'"; then
	pass "the consumer's assignment state is 'assigned'"
else
	fail "the consumer's assignment state is 'assigned'" "consumer: $(status_field "->'consumer'")"
fi
check_eq "no waiting_since while assigned" "" "$(status_field "->'consumer'->'assignment'->>'waiting_since'")"

# --- another member takes every partition ---------------------------------------------
kcat -b "$BOOTSTRAP" -G "$GROUP" -X client.id=aaa-partition-holder \
	-X session.timeout.ms=6000 -X heartbeat.interval.ms=500 -q \
	"$T_RECEIVED" "$T_DISPATCHED" >/dev/null 2>>"$WORK/holder.err" </dev/null &
holder_pid=$!
note "partition holder: kcat $holder_pid"

if wait_until 60 sql_is waiting "SELECT flyt_status()->'consumer'->'assignment'->>'state'"; then
	pass "the consumer's assignment state becomes 'waiting' when another member holds the partitions"
else
	fail "the consumer's assignment state becomes 'waiting'" "consumer: $(status_field "->'consumer'")"
fi
check_eq "no partitions listed while waiting" 0 "$(sql "SELECT jsonb_array_length(flyt_status()->'consumer'->'partitions')")"
check "waiting_since is a timestamp" sql_is t \
	"SELECT (flyt_status()->'consumer'->'assignment'->>'waiting_since')::timestamptz <= now()"
if wait_until 30 sql_is DOWN "SELECT flyt_status()->>'status'"; then
	pass "after the grace period the status is DOWN"
else
	fail "after the grace period the status is DOWN" "flyt_status(): $(show_status)"
fi
REASON=$(status_field "->>'reason'")
note "reason: $REASON"
check "the reason says the consumer has no partitions" grep -q "no partitions assigned since" <<<"$REASON"
check_eq "flyt_metrics() says down" 0 "$(metric_sum flyt_instance_up)"

# --- the other member leaves -----------------------------------------------------------
holder_stop
if wait_until 60 sql_is assigned "SELECT flyt_status()->'consumer'->'assignment'->>'state'"; then
	pass "the worker gets the partitions back when the other member leaves"
else
	fail "the worker gets the partitions back when the other member leaves" "consumer: $(status_field "->'consumer'")"
fi
if wait_status_up 30; then
	pass "status UP again"
else
	fail "status UP again" "flyt_status(): $(show_status)"
fi
produce "$T_RECEIVED" k1 "$FIX_VALUE" -H "$H_FLOW=$FIX_HEADERS" || fail "produce to $T_RECEIVED"
if wait_until "$WAIT" sql_is 1 "SELECT count(*) FROM flyt.instance"; then
	pass "and consumes again"
else
	fail "and consumes again" "flyt_status(): $(show_status)"
fi

finish
