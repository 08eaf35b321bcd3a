#!/usr/bin/env bash
#
# worker_window.sh — the pump's window is bounded by size as well as by
# count (flyt_instance.max_in_flight_memory, docs/worker.md "Producing"):
#
#   - with max_in_flight_memory = 64kB and the default max_in_flight, 30
#     retries of instances of about 10 kB each are queued in one transaction
#     while the broker answers every request 5 s late (`rtt 5000`): the
#     worker hands over only as many as fit in 64 kB (plus the one that
#     crosses it), flyt_status() shows them in outbox.in_flight and
#     in_flight_bytes, and that holds while the answers are delayed; the
#     rest waits in the outbox;
#   - meanwhile every queued row is updated (a new row version, as a
#     redelivery's bookkeeping makes): the pump deletes a delivered row at
#     the tid its scan found it (outbox_scan.c) only while it is still the
#     same version, else by id, so none is left behind to be sent again;
#   - once the broker answers at once again, every retry arrives, exactly
#     once each, and the outbox drains;
#   - rows in flight when flyt.outbox is truncated: their deliveries are
#     recorded without an error (their tids point past the table's end);
#   - with a DELETE trigger on flyt.outbox (a user's), delivered rows are
#     deleted through the executor, so the trigger sees each of them.
#
# (Fails with a window bounded by count alone: all 30 go at once; and with
# deletes by tid alone: the updated rows stay and go again; both checked.)
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# Functions called through wait_until and holds_for look unreachable.
# shellcheck disable=SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 200

N=30
LIMIT=65536

broker_start
worker_cluster_start -c "flyt_instance.max_in_flight_memory = '64kB'"
require_worker
expect_status_up
check_eq "max_in_flight_memory is 64kB" "64kB" "$(sql "SHOW flyt_instance.max_in_flight_memory")"

sql -v h="$FIX_HEADERS" "SELECT count(flyt_register_instance(:'h'::jsonb,
	jsonb_build_object('valuePerKey', jsonb_build_object('tekst', repeat('x', 10000) || n::text))))
	FROM generate_series(1, $N) n" >/dev/null
if wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "the $N instance-registered are delivered"
else
	fail "the $N instance-registered are delivered" "flyt_status(): $(show_status)"
fi

broker_cmd "rtt 5000" || true
check_eq "the broker answers 5 s late" "ok rtt 5000 all" "$reply"
sql "SELECT count(flyt_retry(id)) FROM flyt.instance" >/dev/null
ROW=$(sql "SELECT max(octet_length(key) + octet_length(value) + pg_column_size(headers)) FROM flyt.outbox")
BOUND=$((LIMIT / ROW + 1))
note "largest retry row: $ROW bytes; at most $BOUND may be in flight"
check "each retry row is over 10 kB" [ "$ROW" -gt 10000 ]

in_flight() {
	status_field "->'outbox'->>'in_flight'"
}
within_window() {
	local n bytes
	n=$(in_flight) || return 1
	bytes=$(status_field "->'outbox'->>'in_flight_bytes'") || return 1
	[ "$n" -ge 1 ] && [ "$n" -le "$BOUND" ] && [ "$bytes" -lt $((LIMIT + ROW)) ]
}
some_in_flight() {
	local n
	n=$(in_flight) || return 1
	[ "$n" -ge 1 ]
}
if wait_until "$WAIT" some_in_flight; then
	pass "retries are handed to the producer"
else
	fail "retries are handed to the producer" "flyt_status(): $(show_status)"
fi
check_eq "every queued row gets a new version while some are in flight" "$N" \
	"$(sql "UPDATE flyt.outbox SET last_error = 'touched by worker_window.sh' RETURNING 1" | wc -l)"
if holds_for 1 within_window; then
	pass "at most $BOUND retries (64 kB and one more) in flight while the answers are late"
else
	fail "at most $BOUND retries (64 kB and one more) in flight while the answers are late" \
		"flyt_status(): $(show_status)"
fi
check "the rest waits in the outbox" [ "$(sql "SELECT count(*) FROM flyt.outbox")" -gt "$BOUND" ]

broker_cmd "rtt 0" || true
check_eq "the broker answers at once again" "ok rtt 0 all" "$reply"
if wait_until 120 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "the outbox drains"
else
	fail "the outbox drains" "flyt_status(): $(show_status)"
fi
if wait_messages "$T_RETRY" "$N"; then
	pass "all $N retries arrive"
else
	fail "all $N retries arrive" "$(jq length "$WORK/$T_RETRY.json") on the topic"
fi
check_eq "one message per retry" "$N" "$(jq '[.[].key] | unique | length' "$WORK/$T_RETRY.json")"
check_eq "no retry sent twice" "$N" "$(jq length "$WORK/$T_RETRY.json")"
check_eq "nothing dead-lettered" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"

# --- truncated while in flight ------------------------------------------------------------

broker_cmd "rtt 5000" || true
sql "SELECT count(flyt_retry(id)) FROM flyt.instance" >/dev/null
wait_until "$WAIT" some_in_flight || fail "retries are in flight again" "flyt_status(): $(show_status)"
sql "TRUNCATE flyt.outbox" >/dev/null
broker_cmd "rtt 0" || true
if wait_until "$WAIT" sql_is 0 "SELECT flyt_status()->'outbox'->>'in_flight'"; then
	pass "the deliveries of rows truncated in flight are recorded"
else
	fail "the deliveries of rows truncated in flight are recorded" "flyt_status(): $(show_status)"
fi
check_eq "no error reading past the end of flyt.outbox" 0 "$(grep -c 'could not read block' "$CLUSTER_LOG" || true)"
check_eq "status UP after the truncation" UP "$(status_field "->>'status'")"

# --- a user's DELETE trigger ------------------------------------------------------------------

sql "CREATE TABLE public.outbox_deleted (id bigint);
     CREATE FUNCTION public.note_outbox_delete() RETURNS trigger LANGUAGE plpgsql AS
       \$\$BEGIN INSERT INTO public.outbox_deleted VALUES (OLD.id); RETURN OLD; END\$\$;
     CREATE TRIGGER note_outbox_delete AFTER DELETE ON flyt.outbox
       FOR EACH ROW EXECUTE FUNCTION public.note_outbox_delete()" >/dev/null
sql "SELECT count(flyt_retry(id)) FROM flyt.instance" >/dev/null
if wait_until 120 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "the outbox drains with a DELETE trigger on it"
else
	fail "the outbox drains with a DELETE trigger on it" "flyt_status(): $(show_status)"
fi
check_eq "the trigger saw every delivered row deleted" "$N" "$(sql "SELECT count(DISTINCT id) FROM public.outbox_deleted")"

finish
