#!/usr/bin/env bash
#
# worker_plans.sh — the pump's statements on flyt.outbox go by its primary
# key whatever the table's statistics say.
#
# The worker keeps generic plans.  Planned from the statistics of an empty
# outbox (what ANALYZE finds after every drain), they used to be sequential
# scans with a sort: each page of a backlog and each batch of delivered
# rows then read the whole backlog, and a drain of 100,000 messages took
# several times as long (bench/RESULTS.md).  auto_explain logs the plans the worker's
# statements run with:
#
#   - after an instance-registered is delivered, VACUUM truncates the empty
#     outbox, as autovacuum does after a drain (which invalidates the
#     worker's plans); a retry is sent and recorded, so they are planned
#     again while the table has no pages; then a backlog of retries is
#     queued in one transaction and drained;
#   - the worker's statements on flyt.outbox ran as scans of outbox_pkey,
#     none as a sequential scan of flyt.outbox.
#
# (Fails with the plans made as before: checked.)
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

BACKLOG=300

broker_start
worker_cluster_start -c "shared_preload_libraries = 'flyt_instance,auto_explain'" \
	-c "auto_explain.log_min_duration = 0" -c "auto_explain.log_nested_statements = on" \
	-c "log_line_prefix = '%m [%p] %b: '"
require_worker
expect_status_up

ID=$(register_fixture)
wait_messages "$T_REGISTERED" 1 || fail "instance-registered is delivered"
wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox" || fail "the outbox is drained"
# What autovacuum does to the outbox after a drain: VACUUM finds it empty
# and truncates it.  That invalidates the worker's plans; the next retry,
# sent and recorded while the table is that small, has them planned again.
sql "VACUUM flyt.outbox" >/dev/null
check_eq "VACUUM leaves flyt.outbox empty, no pages" "0|0" \
	"$(sql "SELECT relpages || '|' || reltuples FROM pg_class WHERE oid = 'flyt.outbox'::regclass")"
sql "SELECT flyt_retry($ID)" >/dev/null
wait_messages "$T_RETRY" 1 && wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox" ||
	fail "a retry is sent and recorded"
LOG_FROM=$(wc -c <"$CLUSTER_LOG")

sql "SELECT count(flyt_retry($ID)) FROM generate_series(1, $BACKLOG)" >/dev/null
if wait_messages "$T_RETRY" "$((BACKLOG + 1))" && wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "a backlog of $BACKLOG retries is delivered"
else
	fail "a backlog of $BACKLOG retries is delivered" "outbox: $(sql_quiet 'SELECT count(*) FROM flyt.outbox')"
fi

# The worker's plans: a plan is the prefixed line auto_explain writes and
# the lines after it that have no prefix.
worker_plans() {
	tail -c +"$((LOG_FROM + 1))" "$CLUSTER_LOG" | awk '
		/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] / { worker = index($0, "] flyt_instance worker: ") > 0; next }
		worker { print }'
}
worker_plans >"$WORK/plans.txt"
note "the worker ran $(grep -c 'Query Text:' "$WORK/plans.txt" || true) logged statements"
check "the worker's statements on flyt.outbox used outbox_pkey" grep -q 'on outbox_pkey\|using outbox_pkey' "$WORK/plans.txt"
seq=$(grep -c 'Seq Scan on outbox' "$WORK/plans.txt" || true)
if [ "$seq" -eq 0 ]; then
	pass "none of them scanned flyt.outbox sequentially"
else
	fail "none of them scanned flyt.outbox sequentially" \
		"$(grep -B8 'Seq Scan on outbox' "$WORK/plans.txt" | head -40)"
fi

finish
