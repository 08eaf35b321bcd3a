#!/usr/bin/env bash
#
# worker_memory.sh — the worker's long-lived memory does not grow with the
# number of passes.  Each pass runs short transactions; after a commit the
# current memory context is TopMemoryContext, and whatever a pass allocated
# after a step once stayed there for good (about 20 MB a day).
#
# The worker runs idle for 20 s (a pass with a step every second) and then
# through 3000 retries, each its own transaction, that wake it for
# thousands of passes while it sends to the embedded broker;
# TopMemoryContext's used bytes (pg_log_backend_memory_contexts) must not
# grow by more than 16 kB.  The settings signature the worker compares on
# every pass includes kafka_config, so a 3 kB property (client.rack) makes
# each leaked copy large: before the fix, ~60 kB leaked in the idle 20 s.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

RETRIES=3000
IDLE=20

broker_start
KAFKA_CONFIG="$KAFKA_CONFIG;client.rack=$(head -c 3000 /dev/zero | tr '\0' r)"
worker_cluster_start
require_worker
expect_status_up
WPID=$(status_field "->'worker'->>'pid'")
# 300 instances: retries of one instance go one at a time (per-key order),
# of different instances side by side
INSTANCES=300
sql -v h="$FIX_HEADERS" -v v="$FIX_VALUE" \
	"SELECT count(flyt_register_instance(:'h'::jsonb, :'v'::jsonb)) FROM generate_series(1, $INSTANCES)" >/dev/null

# top_used — TopMemoryContext's used bytes in the worker, from the line that
# pg_log_backend_memory_contexts writes to the server log.
top_used() {
	local mark before got
	before=$(grep -c 'TopMemoryContext: ' "$CLUSTER_LOG" || true)
	sql "SELECT pg_log_backend_memory_contexts($WPID)" >/dev/null
	for _ in $(seq 100); do
		got=$(grep -c 'TopMemoryContext: ' "$CLUSTER_LOG" || true)
		[ "$got" -gt "$before" ] && break
		sleep 0.1
	done
	mark=$(grep 'TopMemoryContext: ' "$CLUSTER_LOG" | tail -n 1)
	sed -n 's/.*; \([0-9][0-9]*\) used$/\1/p' <<<"$mark"
}

outbox_empty() {
	sql_is 0 "SELECT count(*) FROM flyt.outbox"
}

wait_until "$WAIT" outbox_empty || true
u0=$(top_used)
[ -n "$u0" ] || bail "read TopMemoryContext of the worker" "$(grep -A2 'logging memory contexts' "$CLUSTER_LOG" | tail -n 5)"
sleep "$IDLE" # idle on purpose: the worker's passes while nothing happens
ui=$(top_used)
note "worker TopMemoryContext used: $u0 -> $ui bytes over $IDLE s idle"
check "idle: TopMemoryContext grows by less than 16 kB ($((ui - u0)) bytes)" [ $((ui - u0)) -lt 16384 ]
u0=$ui
printf '\\set id random(1, %s)\nSELECT flyt_retry(:id);\n' "$INSTANCES" >"$WORK/retry.sql"
(cd "$WORK" && pgbench -n -f retry.sql -c 1 -t "$RETRIES" postgres >"$WORK/pgbench.out" 2>&1) ||
	fail "pgbench of $RETRIES retries" "$(tail -n 5 "$WORK/pgbench.out")"
if wait_until 60 outbox_empty; then
	pass "$RETRIES retries delivered"
else
	fail "$RETRIES retries delivered" "flyt_status(): $(show_status)"
fi
u1=$(top_used)
note "worker TopMemoryContext used: $u0 -> $u1 bytes over $RETRIES retries"
check "busy: TopMemoryContext grows by less than 16 kB ($((u1 - u0)) bytes)" [ $((u1 - u0)) -lt 16384 ]
check_eq "the worker did not restart" "$WPID" "$(status_field "->'worker'->>'pid'")"

finish
