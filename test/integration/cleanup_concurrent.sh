#!/usr/bin/env bash
#
# cleanup_concurrent.sh — a cleanup batch and changes that commit while it
# locks its victims.
#
# gdb stops a backend running flyt_cleanup() where it locks its first
# victim (heap_lock_tuple): the batch has taken its snapshot, the expired
# instance is not locked yet.  Meanwhile another session retries that
# instance (RETRY_REQUESTED, version 2) and updates it (a new row version,
# as the worker storing flow headers does), both committed.  Then the batch
# goes on:
#   - it deletes the instance (it returns 1, the row is gone): the batch
#     deletes what it locked, at the version the lock returned;
#   - the instance's history is its DELETED row alone, version 3: the
#     retry's event, committed before the lock, is deleted with the rest and
#     the DELETED row comes after it.  A batch that read the history with
#     its first snapshot failed here on (instance_id, version) = (id, 2);
#   - instance-deleted is queued for it and reaches Kafka.
# Then flyt_cleanup() without max_rows deletes five expired instances, in
# batches of cleanup_batch_size (2), and later purges the history of all
# six deleted instances at once (not a batch's worth).
#
# Skipped with a note when there is no gdb or it cannot attach (no ptrace).
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 180

broker_start
worker_cluster_start -c "flyt_instance.cleanup_batch_size = 2"
require_worker
expect_status_up

CORR=none
ID=$(register_fixture)
wait_until 30 sql_is 0 "SELECT count(*) FROM flyt.outbox" || fail "instance-registered is delivered"
sql "UPDATE flyt.instance SET created_at = now() - interval '100 days' WHERE id = $ID" >/dev/null

if ! command -v gdb >/dev/null 2>&1; then
	note "no gdb: a cleanup batch stopped while it locks its victims not checked"
	finish
fi

coproc HELD { without_broker_fds psql -X -At -q -d postgres 2>&1; }
echo "SELECT pg_backend_pid();" >&"${HELD[1]}"
read -r -t 30 HELD_PID <&"${HELD[0]}" || bail "a psql session for gdb to stop"
if ! gdb_hold "$HELD_PID" heap_lock_tuple; then
	note "gdb could not attach to the backend (no ptrace here?): not checked; $(tail -c 300 "$WORK/gdb.log")"
	touch "$WORK/release"
	finish
fi

echo "SELECT flyt_cleanup('30 days', 10);" >&"${HELD[1]}"
if wait_until 20 grep -q '^Breakpoint 1, .*heap_lock_tuple' "$WORK/gdb.log"; then
	pass "gdb stops the cleanup batch where it locks its victim"
	CORR=$(sql "SELECT flyt_retry($ID)")
	check_eq "meanwhile a retry of the instance commits (version 2)" "2|RETRY_REQUESTED" \
		"$(sql "SELECT version || '|' || event_type FROM flyt_instance_history($ID) ORDER BY version DESC LIMIT 1")"
	sql "UPDATE flyt.instance SET flow_headers = flow_headers WHERE id = $ID" >/dev/null
	pass "and an update of it commits"
else
	fail "gdb stops the cleanup batch where it locks its victim" "$(tail -c 600 "$WORK/gdb.log")"
	kill "$GDB_PID" 2>/dev/null || true # still in "continue": it would wait for ever
fi
touch "$WORK/release" # gdb detaches: the batch goes on
wait "$GDB_PID" 2>/dev/null || true
exec {HELD[1]}>&-
ANSWER=
read -r -t 30 ANSWER <&"${HELD[0]}" || true

check_eq "the batch deletes the instance (flyt_cleanup returns 1)" 1 "$ANSWER"
check_eq "the instance is gone" 0 "$(sql "SELECT count(*) FROM flyt.instance WHERE id = $ID")"
check_eq "its history is its DELETED row alone, after the retry's version" "3|DELETED" \
	"$(sql "SELECT string_agg(version || '|' || event_type, ',' ORDER BY version) FROM flyt.instance_event WHERE instance_id = $ID")"
deleted_sent() {
	consume_all "$T_DELETED" | jq -e -s --arg k "$ID" 'any(.[]; .key == $k)' >/dev/null
}
check "instance-deleted reaches Kafka" wait_until 30 deleted_sent
check "and so does the retry's message ($CORR): nothing is left queued" \
	wait_until 30 sql_is 0 "SELECT count(*) FROM flyt.outbox"

# flyt_cleanup without max_rows deletes every expired instance, in batches
# of cleanup_batch_size (2 here) so that what it holds in memory is bounded
sql -v h="$FIX_HEADERS" -v v="$FIX_VALUE" \
	"SELECT count(flyt_register_instance(:'h'::jsonb, :'v'::jsonb)) FROM generate_series(1, 5)" >/dev/null
sql "UPDATE flyt.instance SET created_at = now() - interval '100 days'" >/dev/null
check_eq "flyt_cleanup() without max_rows deletes all five in batches of two" 5 \
	"$(sql "SELECT flyt_cleanup('30 days')")"
check_eq "none is left" 0 "$(sql "SELECT count(*) FROM flyt.instance")"
# and, their DELETED rows aged past one more window, the history of all six
sql "UPDATE flyt.instance_event SET occurred_at = now() - interval '100 days'" >/dev/null
sql "SELECT flyt_cleanup('30 days')" >/dev/null
check_eq "then it purges the history of all six deleted instances, not a batch's worth" 0 \
	"$(sql "SELECT count(*) FROM flyt.instance_event")"

finish
