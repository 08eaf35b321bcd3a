#!/usr/bin/env bash
#
# worker_reconnect.sh — the worker's Kafka handles under settings changes:
#
#   - flyt_instance.org_id emptied while Kafka is configured: no client can
#     do anything (every topic name starts with it).  The worker once made
#     two librdkafka clients a second and flyt_status() never said why; now
#     it keeps Kafka off, says so, and makes no client;
#   - the Kafka settings changed while the broker is down.  A consumer that
#     cannot finish closing in time was abandoned and never freed (its
#     threads, sockets and statistics grew without bound); now it finishes
#     closing in the background once the broker is back and is freed.  With
#     static group membership the close rarely needs the broker (no
#     LeaveGroup), so on the embedded broker the old consumer usually
#     closes at once; either way the worker's thread count must return to
#     what it was, which catches a consumer left behind.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 240

broker_start
worker_cluster_start
require_worker
expect_status_up
WPID=$(status_field "->'worker'->>'pid'")
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$WPID/status"; }
connections() { grep -c 'connecting to Kafka' "$CLUSTER_LOG" || true; }

# --- org_id emptied ------------------------------------------------------------------
sql "ALTER SYSTEM SET flyt_instance.org_id = ''" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 30 sql_is kafka_off "SELECT flyt_status()->'worker'->>'state'"; then
	pass "without org_id the worker keeps Kafka off"
else
	fail "without org_id the worker keeps Kafka off" "flyt_status(): $(show_status)"
fi
check "the status says why" sql_is t "SELECT flyt_status()->>'status' = 'DOWN' AND flyt_status()->>'reason' LIKE '%org_id is not set%'"
c0=$(connections)
sleep 3 # nothing may happen meanwhile: no client is made
check_eq "and makes no Kafka client meanwhile" "$c0" "$(connections)"
sql "ALTER SYSTEM RESET flyt_instance.org_id" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
expect_status_up 30

# --- a consumer that cannot close in time ---------------------------------------------
wait_until 30 sql_is assigned "SELECT flyt_status()->'consumer'->'assignment'->>'state'" || true
t0=$(threads)
note "worker threads with one producer and one consumer: $t0"
broker_cmd down || true
check_eq "broker goes down" "ok down all" "$reply"
sql "ALTER SYSTEM SET flyt_instance.kafka_config = '$KAFKA_CONFIG;client.rack=changed'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 30 grep -q 'did not close in time; finishing its close in the background' "$CLUSTER_LOG"; then
	pass "the old consumer could not close with the broker down: it finishes in the background"
else
	note "the old consumer closed at once (nothing to finish)"
	pass "the old consumer was closed or is finishing in the background"
fi
broker_cmd up || true
check_eq "broker comes up" "ok up all" "$reply"
expect_status_up 60
if grep -q 'finishing its close in the background' "$CLUSTER_LOG"; then
	if wait_until 60 grep -q 'an earlier Kafka consumer finished closing and was freed' "$CLUSTER_LOG"; then
		pass "once the broker is back the old consumer finishes closing and is freed"
	else
		fail "once the broker is back the old consumer finishes closing and is freed"
	fi
fi
settled() { [ "$(threads)" -le "$t0" ]; }
if wait_until 60 settled; then
	pass "the worker's threads are back to $t0 ($(threads))"
else
	fail "the worker's threads are back to $t0" "now $(threads)"
fi
check_eq "the worker did not restart" "$WPID" "$(status_field "->'worker'->>'pid'")"

finish
