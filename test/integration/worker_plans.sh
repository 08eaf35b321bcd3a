#!/usr/bin/env bash
#
# worker_plans.sh — the pump reads and deletes flyt.outbox by its primary
# key whatever the table's statistics say.
#
# The worker keeps generic plans.  Planned from the statistics of an empty
# outbox (what ANALYZE finds after every drain), they used to be sequential
# scans with a sort: each page of a backlog and each batch of delivered
# rows then read the whole backlog, and a drain of 100,000 messages took
# several times as long (bench/RESULTS.md).  auto_explain logs the plans
# the worker's statements run with:
#
#   - after an instance-registered is delivered, VACUUM truncates the empty
#     outbox, as autovacuum does after a drain (which invalidates the
#     worker's plans); a retry is sent and recorded, so they are planned
#     again while the table has no pages; a retry whose row gets a new
#     version while it is in flight (the broker answers 3 s late) is then
#     deleted by its id, a planned statement (the others are deleted where
#     the scan found them, without one); then a backlog of retries is
#     queued in one transaction and drained;
#   - the worker's statements on flyt.outbox ran as scans of outbox_pkey,
#     none as a sequential scan of flyt.outbox, and the only delete among
#     them was that of the changed row;
#   - the pump's scans read outbox_pkey without a plan (outbox_scan.c);
#     a backlog of retries over many instances drains with them reading
#     only a few index entries per message after the outbox was analyzed
#     with many pages and a few live rows waiting for their redelivery
#     (which made the planned scan a bitmap scan with a sort), and again
#     while a REPEATABLE READ transaction that took no outbox id is open
#     (they used to wait for every running transaction before moving on,
#     and walked every delivered row again meanwhile).
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

broker_cmd "rtt 3000" || true
check_eq "the broker answers 3 s late" "ok rtt 3000 all" "$reply"
sql "SELECT flyt_retry($ID)" >/dev/null
in_flight() {
	sql_is 1 "SELECT flyt_status()->'outbox'->>'in_flight'"
}
wait_until "$WAIT" in_flight || fail "a retry is in flight" "flyt_status(): $(show_status)"
check_eq "its row gets a new version while it is in flight" 1 \
	"$(sql "UPDATE flyt.outbox SET last_error = 'touched by worker_plans.sh' RETURNING 1" | wc -l)"
broker_cmd "rtt 0" || true
if wait_messages "$T_RETRY" 2 && wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "the retry changed in flight is delivered and deleted"
else
	fail "the retry changed in flight is delivered and deleted" "outbox: $(sql_quiet 'SELECT count(*) FROM flyt.outbox')"
fi

sql "SELECT count(flyt_retry($ID)) FROM generate_series(1, $BACKLOG)" >/dev/null
if wait_messages "$T_RETRY" "$((BACKLOG + 2))" && wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
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
check_eq "the backlog's delivered rows were deleted without a statement (one delete by id: the changed row)" 1 \
	"$(grep -c 'Delete on outbox' "$WORK/plans.txt" || true)"
seq=$(grep -c 'Seq Scan on outbox' "$WORK/plans.txt" || true)
if [ "$seq" -eq 0 ]; then
	pass "none of them scanned flyt.outbox sequentially"
else
	fail "none of them scanned flyt.outbox sequentially" \
		"$(grep -B8 'Seq Scan on outbox' "$WORK/plans.txt" | head -40)"
fi

# --- Backlogs of retries over many instances, through a small window -------
# (many scans: one of each instance in turn, so ids alternate between keys)
INSTANCES=500
PER=10
N=$((INSTANCES * PER))
sql "ALTER SYSTEM SET auto_explain.log_min_duration = -1;
     ALTER SYSTEM SET flyt_instance.max_in_flight = 50;
     SELECT pg_reload_conf()" >/dev/null
base=$(sql "SELECT max(id) + 1 FROM flyt.instance")
sql "INSERT INTO flyt.instance (id, payload, flow_headers, source_application_id, source_application_integration_id,
                                source_application_instance_id, integration_id, created_at)
     OVERRIDING SYSTEM VALUE
     SELECT g, t.payload, jsonb_set(t.flow_headers, '{instanceId}', to_jsonb(g)), t.source_application_id,
            t.source_application_integration_id, 'many-' || g, t.integration_id, now()
     FROM flyt.instance t, generate_series($base, $base + $INSTANCES - 1) g WHERE t.id = $ID;
     INSERT INTO flyt.instance_event (instance_id, version, event_type, requested_by)
     SELECT g, 1, 'REGISTERED', 'test' FROM generate_series($base, $base + $INSTANCES - 1) g" >/dev/null
counts() { sql "SELECT (SELECT idx_tup_read || ' ' || idx_scan FROM pg_stat_user_indexes WHERE indexrelid = 'flyt.outbox_pkey'::regclass)
                    || ' ' || (SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'flyt.outbox'::regclass)"; }
deleted_all() { [ "$(sql_quiet "SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'flyt.outbox'::regclass")" -ge $((del0 + N)) ]; }
# drain WHAT — queues N retries (one of each instance in turn, PER times:
# ids alternate between keys), waits until they are delivered, checks
# how many outbox_pkey entries the scans read per message (the counts of
# pg_stat_user_indexes, flushed by the worker with its deletes).
drain() {
	local read0 read1 scans0 scans1 per_message
	read -r read0 scans0 del0 <<<"$(counts)"
	sql "SELECT count(flyt_retry($base + i % $INSTANCES)) FROM generate_series(0, $N - 1) i" >/dev/null
	if wait_until "$WAIT" deleted_all; then
		pass "a backlog of $N retries over $INSTANCES instances is delivered $1"
	else
		fail "a backlog of $N retries over $INSTANCES instances is delivered $1" \
			"outbox: $(sql_quiet 'SELECT count(*) FROM flyt.outbox')"
	fi
	read -r read1 scans1 _ <<<"$(counts)"
	per_message=$(((read1 - read0) / N))
	note "outbox_pkey entries read: $((read1 - read0)) for $N messages, in $((scans1 - scans0)) scans of it"
	check "the scans read outbox_pkey at most 25 times per message $1 (read $per_message)" [ "$per_message" -le 25 ]
}

# --- Statistics that made the planned scan read the whole backlog ----------
# A large outbox heap and index that hold a few live rows, at the end, and
# were analyzed so: a generic plan of the scan by id range made then was a
# bitmap scan with a sort, and each page of a backlog read all of it (a
# drain that collapsed in bench/RESULTS.md).  The scans use no plan now
# (outbox_scan.c).  Here the live rows are rows waiting for a redelivery
# an hour away, with keys of their own; they are deleted afterwards.  The
# scans must not start before them either: they used to hold the start of
# every scan back (34 entries per message with the scan of outbox_scan.c;
# 92 with the planned scans, whose plan also held on into the next drain:
# 56 there; both checked).
sql "INSERT INTO flyt.outbox (event_name, topic, key, headers, value, next_attempt_at)
     SELECT 'instance-registered', '$T_REGISTERED', 'waiting-' || g, '{}', repeat('x', 1000), now() + interval '1 hour'
     FROM generate_series(1, 20000) g" >/dev/null
sql "DELETE FROM flyt.outbox WHERE key LIKE 'waiting-%' AND id < (SELECT max(id) - 9 FROM flyt.outbox)" >/dev/null
sql "VACUUM ANALYZE flyt.outbox" >/dev/null
check_eq "flyt.outbox: many pages, 10 rows, analyzed" "true|10" \
	"$(sql "SELECT (relpages > 1000) || '|' || reltuples FROM pg_class WHERE oid = 'flyt.outbox'::regclass")"
drain "after that"
sql "DELETE FROM flyt.outbox WHERE key LIKE 'waiting-%'" >/dev/null

# --- A long transaction that took no outbox id holds no scan back ----------
# The scans start where everything before has been handed over, and that
# point moves once the transactions that may still commit rows below it
# have ended.  It used to wait for every running transaction: a long
# read-only one (pg_dump, a report) kept it in place for as long as it
# ran, and since the same snapshot keeps the delivered and deleted rows
# from being removed, every scan walked all of them again.  Here a
# REPEATABLE READ transaction stays open while a backlog of retries over
# many instances drains through a small window (many scans); the index
# entries of outbox_pkey the scans read (pg_stat_user_indexes, flushed by
# the worker with its deletes) stay within a few per message.  With the
# old wait: about N * N / (2 * window) in all, 56 per message in a run here.
spawn psql -X -q -d postgres -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM flyt.instance; SELECT pg_sleep(600)"
IT_PIDS+=("$!")
wait_until "$WAIT" sql_is 1 "SELECT count(*) FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()" ||
	fail "a REPEATABLE READ transaction is open"
drain "while the transaction is open"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()" >/dev/null

finish
