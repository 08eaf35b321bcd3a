#!/usr/bin/env bash
#
# worker_locks.sh — a user's open transaction holding an instance does not
# stop the worker, and a database error keeps the Kafka handles.
#
# A session retries instance A and keeps its transaction open for 15 s (its
# KEY SHARE lock on A stays).  Meanwhile instance-dispatched for A arrives:
# deleting A must wait for that lock.  The worker once waited as long as it
# took, and sent, consumed and reported nothing meanwhile.  Now its lock
# timeout (5 s) fails the batch, which is tried again after a backoff, and
# everything else goes on:
#   - a retry of instance B, queued while A is held, reaches Kafka before
#     the session lets A go;
#   - once it does, A is deleted and instance-deleted sent: nothing was
#     dead-lettered;
#   - the failed batches did not make new Kafka handles (one "connecting to
#     Kafka" in the server log, the same producer: no message twice).
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

HOLD=15
holder_pid=
teardown() {
	if [ -n "$holder_pid" ]; then
		kill "$holder_pid" 2>/dev/null || true
		wait "$holder_pid" 2>/dev/null || true
	fi
	it_teardown
}
cluster_trap teardown

broker_start
worker_cluster_start
require_worker
expect_status_up
A=$(register_fixture)
B=$(register_fixture)
wait_messages "$T_REGISTERED" 2 || fail "both registrations delivered"

# The session that holds A.
printf 'BEGIN;\nSELECT flyt_retry(%s);\nSELECT pg_sleep(%s);\nCOMMIT;\n' "$A" "$HOLD" |
	timeout $((HOLD + 30)) psql -X -q -d postgres >/dev/null 2>"$WORK/holder.err" &
holder_pid=$!
held() {
	sql_is 1 "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
		WHERE c.relname = 'instance' AND l.pid <> pg_backend_pid() AND l.granted AND l.mode = 'RowShareLock'"
}
wait_until 10 held || fail "the session holds instance $A"
held_at=$SECONDS

produce "$T_DISPATCHED" "$A" '{"dispatched":true}' -H "$H_FLOW=$(jq -c --argjson i "$A" '.instanceId = $i' <<<"$FIX_HEADERS")" ||
	fail "produce instance-dispatched for $A"
worker_waits() {
	sql_is 1 "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flyt_instance worker' AND wait_event_type = 'Lock'"
}
if wait_until 20 worker_waits; then
	pass "the worker waits for the lock on $A"
else
	fail "the worker waits for the lock on $A" "flyt_status(): $(show_status)"
fi
CORR_B=$(sql "SELECT flyt_retry($B)")
retry_of_b_sent() {
	snapshot "$T_RETRY"
	jq -e --arg c "$CORR_B" "$JQ_DEFS"' any(.[]; flow.correlationId == $c)' "$WORK/$T_RETRY.json" >/dev/null
}
if wait_until $((HOLD - 3)) retry_of_b_sent && kill -0 "$holder_pid" 2>/dev/null; then
	pass "the retry of $B reaches Kafka while $A is still held ($((SECONDS - held_at)) s)"
else
	fail "the retry of $B reaches Kafka while $A is still held" "flyt_status(): $(show_status)"
fi
if wait_until 10 grep -q 'canceling statement due to lock timeout' "$CLUSTER_LOG"; then
	pass "the worker's batch failed on its lock timeout"
else
	fail "the worker's batch failed on its lock timeout"
fi
check_eq "instance $A still there while held" 1 "$(sql "SELECT count(*) FROM flyt.instance WHERE id = $A")"

wait "$holder_pid" || fail "the holding session ended well" "$(cat "$WORK/holder.err")"
holder_pid=
if wait_until 60 sql_is 0 "SELECT count(*) FROM flyt.instance WHERE id = $A"; then
	pass "after the session ends, $A is deleted"
else
	fail "after the session ends, $A is deleted" "flyt_status(): $(show_status)"
fi
if wait_until 30 topic_has_at_least "$T_DELETED" 1; then
	pass "and instance-deleted is sent"
else
	fail "and instance-deleted is sent"
fi
check_eq "nothing dead-lettered" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"
check_eq "the Kafka handles were made once" 1 "$(grep -c 'connecting to Kafka' "$CLUSTER_LOG")"
check_eq "each registration once on Kafka (no resend by a new producer)" 2 "$(topic_count "$T_REGISTERED")"
if wait_status_up 30; then
	pass "status UP"
else
	fail "status UP" "flyt_status(): $(show_status)"
fi

finish
