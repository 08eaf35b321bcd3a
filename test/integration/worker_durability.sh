#!/usr/bin/env bash
#
# worker_durability.sh — no message reaches Kafka before the transaction
# that queued it is durable.
#
# A transaction that commits without waiting for its WAL (here a session
# with synchronous_commit = off; the worker's own delivery and cleanup steps
# commit that way too) is visible at once but durable only once the WAL
# writer flushes it (wal_writer_delay = 10 s here, so not soon).  The worker
# once sent such a row right away: after a crash the transaction was gone,
# while Kafka already held its event.  Now the pump flushes the WAL up to
# what it can see before it sends.
#
#   - flyt_retry in a synchronous_commit = off session; wait until its
#     instance-requested-for-retry is on Kafka; crash the server (immediate
#     stop) at once and start it again: the retry's RETRY_REQUESTED history
#     row (same correlationId) must have survived;
#   - the same for the cleanup's instance-deleted (the worker's own
#     asynchronous commit): after the crash the instance is gone for good.
#     (This half held before the fix too: a cleanup batch writes enough WAL
#     that the WAL writer, woken by a filled page, flushes it within
#     milliseconds.  The retry half failed on every run before the fix.)
#   - every flyt.event-id is a UUID, and messages sharing one are the same
#     message sent again;
#   - (first) 1000 synchronous retries back to back from one pgbench
#     client: the pump makes no WAL flush of its own for them
#     (flyt_instance_pump_wal_flushes_total unchanged): their transactions
#     noted that their commit was flushed when it ended (a row seen before
#     its backend said so waits for the word, it is not flushed for).  Without the notes the pump flushes whenever a retry's
#     commit log group (32 ids) also holds a later, asynchronous and
#     unflushed commit, the worker's own recording of a delivery: 1, 58 and
#     62 flushes in three runs of this test (fsync on, as here: with it off
#     the retries come faster than the recordings and the case is rarer).
#     The same with each retry in a subtransaction, whose id its rows
#     carry: 224 and 269 flushes with only the top transaction's id noted.
#   - a retry whose backend gdb stops in the extension's commit callback
#     (visible, its note still "committing") is sent all the same, while
#     the backend is stopped: the pump waits for the word for 50 ms only.
#     (A delivery that failed and was retried would be flushed for, rightly:
#     the worker records the failure without waiting.  The embedded broker
#     does not fail them.)
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

broker_start
worker_cluster_start -c "fsync = on" -c "wal_writer_delay = 10000" -c "wal_writer_flush_after = 1GB" \
	-c "flyt_instance.cleanup_interval = '2s'" -c "flyt_instance.cleanup_initial_delay = '1h'"
require_worker
expect_status_up

ID=$(register_fixture)
wait_messages "$T_REGISTERED" 1 || fail "instance-registered is delivered"

restart_after_crash() {
	without_broker_fds cluster_crash || true
	without_broker_fds cluster_start || bail "the server starts after the crash"
	wait_status_up 45 || fail "status UP after the crash" "flyt_status(): $(show_status)"
}

# --- synchronous retries: durable when visible, no flush of the pump's own -------------
# at random among 20 instances (retries of one instance wait for each
# other's delivery, one key at a time, and seldom meet the case), from one
# pgbench client, as fast as it goes
sql -v h="$FIX_HEADERS" -v v="$FIX_VALUE" \
	"SELECT count(flyt_register_instance(:'h'::jsonb, :'v'::jsonb)) FROM generate_series(1, 19)" >/dev/null
wait_until 30 sql_is 0 "SELECT count(*) FROM flyt.outbox" || fail "the registrations' rows are deleted"
read -r LO HI <<<"$(sql "SELECT min(id) || ' ' || max(id) FROM flyt.instance" | tr '|' ' ')"
printf '\\set id random(%s, %s)\nSELECT flyt_retry(:id);\n' "$LO" "$HI" >"$WORK/retry.sql"
FLUSHES=$(metric_sum flyt_instance_pump_wal_flushes_total)
[ -n "$FLUSHES" ] || bail "flyt_metrics() has flyt_instance_pump_wal_flushes_total"
FLUSHES_BEFORE_RETRIES=$FLUSHES
out=$(timeout 300 "$("${PG_CONFIG:-pg_config}" --bindir)/pgbench" -n -c 1 -t 1000 -f "$WORK/retry.sql" postgres 2>&1) ||
	bail "1000 retries from pgbench" "$out"
if wait_until 120 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "1000 synchronous retries are sent"
else
	fail "1000 synchronous retries are sent" "flyt_status(): $(show_status)"
fi
check_eq "the pump flushed no WAL for them (flyt_instance_pump_wal_flushes_total $FLUSHES before)" "$FLUSHES" \
	"$(metric_sum flyt_instance_pump_wal_flushes_total)"

# the same with each retry in a subtransaction (its rows carry the
# subtransaction's id)
printf '\\set id random(%s, %s)\nBEGIN;\nSAVEPOINT s;\nSELECT flyt_retry(:id);\nRELEASE SAVEPOINT s;\nCOMMIT;\n' \
	"$LO" "$HI" >"$WORK/retry_sub.sql"
FLUSHES=$(metric_sum flyt_instance_pump_wal_flushes_total)
out=$(timeout 300 "$("${PG_CONFIG:-pg_config}" --bindir)/pgbench" -n -c 1 -t 1000 -f "$WORK/retry_sub.sql" postgres 2>&1) ||
	bail "1000 retries in subtransactions from pgbench" "$out"
wait_until 120 sql_is 0 "SELECT count(*) FROM flyt.outbox" ||
	fail "1000 synchronous retries in subtransactions are sent" "flyt_status(): $(show_status)"
check_eq "nor for retries in subtransactions ($FLUSHES before)" "$FLUSHES" "$(metric_sum flyt_instance_pump_wal_flushes_total)"

# --- a backend held between its commit showing and its saying so --------------------
# gdb stops the retry's backend in the extension's commit callback: the row
# is visible, its note still says "committing".  The pump must not wait for
# that backend for ever: after 50 ms of such rows it flushes for them and
# sends.  gdb holds the backend until $WORK/release exists.
if command -v gdb >/dev/null 2>&1; then
	not_detached() { kill -0 "$GDB_PID" && ! grep -q 'detached\]' "$WORK/gdb.log"; }
	SENT=0
	coproc HELD { without_broker_fds psql -X -At -q -d postgres; }
	echo "SELECT pg_backend_pid();" >&"${HELD[1]}"
	read -r -t 30 HELD_PID <&"${HELD[0]}" || bail "a psql session for gdb to stop"
	if gdb_hold "$HELD_PID" 'flyt_xact_callback if event == XACT_EVENT_COMMIT'; then
		retries="SELECT count(*) FROM flyt_instance_history($ID) WHERE event_type = 'RETRY_REQUESTED'"
		RETRIES=$(sql "$retries")
		echo "SELECT flyt_retry($ID);" >&"${HELD[1]}"
		SENT=1
		if wait_until 20 grep -q '^Breakpoint 1, flyt_xact_callback (event=XACT_EVENT_COMMIT' "$WORK/gdb.log"; then
			check_eq "the stopped backend's retry shows as committed" $((RETRIES + 1)) "$(sql "$retries")"
			if wait_until 20 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
				pass "a retry whose backend is stopped right after its commit is sent all the same"
			else
				fail "a retry whose backend is stopped right after its commit is sent all the same" \
					"flyt_status(): $(show_status)"
			fi
			check "and its backend was still stopped then" not_detached
		else
			fail "gdb stops the backend in its commit callback" "$(tail -c 600 "$WORK/gdb.log")"
			kill "$GDB_PID" 2>/dev/null || true # still in "continue": it would wait for ever
		fi
	else
		note "gdb could not attach to the backend (no ptrace here?): not checked; $(tail -c 300 "$WORK/gdb.log")"
	fi
	touch "$WORK/release"	# gdb detaches: the backend goes on
	wait "$GDB_PID" 2>/dev/null || true
	exec {HELD[1]}>&-
	read -r -t 30 HELD_ANSWER <&"${HELD[0]}" || true
	if [ "$SENT" = 1 ]; then
		check_eq "the stopped retry then answers" 1 \
			"$(sql "SELECT count(*) FROM flyt_instance_history($ID) WHERE event_type = 'RETRY_REQUESTED' AND correlation_id::text = '${HELD_ANSWER:-none}'")"
	fi
else
	note "no gdb: a backend stopped after its commit not checked"
fi

# --- a user's transaction that committed without waiting ------------------------------
CORR=$(printf 'SET synchronous_commit = off;\nSELECT flyt_retry(%s);\n' "$ID" |
	timeout 30 psql -X -At -q -v ON_ERROR_STOP=1 -d postgres -f -)
note "retry $CORR committed with synchronous_commit = off"
on_kafka() {
	snapshot "$T_RETRY"
	jq -e --arg c "$1" "$JQ_DEFS"' any(.[]; flow.correlationId == $c)' "$WORK/$T_RETRY.json" >/dev/null
}
if wait_until 30 on_kafka "$CORR"; then
	pass "the retry is on Kafka"
else
	fail "the retry is on Kafka" "flyt_status(): $(show_status)"
fi
note "flyt_instance_pump_wal_flushes_total: $FLUSHES_BEFORE_RETRIES before the retries, $(metric_sum flyt_instance_pump_wal_flushes_total) after this one"
restart_after_crash
check_eq "after a crash right after it was sent, the retry's history row is there" 1 \
	"$(sql "SELECT count(*) FROM flyt_instance_history($ID) WHERE event_type = 'RETRY_REQUESTED' AND correlation_id = '$CORR'")"

# --- the worker's own asynchronous commit: a cleanup batch ------------------------------
sql "UPDATE flyt.instance SET created_at = now() - interval '100 days' WHERE id = $ID" >/dev/null
sql "ALTER SYSTEM SET flyt_instance.cleanup_initial_delay = '0s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 60 topic_has_at_least "$T_DELETED" 1; then
	pass "the cleanup's instance-deleted is on Kafka"
else
	fail "the cleanup's instance-deleted is on Kafka" "flyt_status(): $(show_status)"
fi
restart_after_crash
check_eq "after a crash right after it was sent, the instance stays deleted" 0 \
	"$(sql "SELECT count(*) FROM flyt.instance WHERE id = $ID")"
check_eq "and its DELETED history row is there" 1 \
	"$(sql "SELECT count(*) FROM flyt.instance_event WHERE instance_id = $ID AND event_type = 'DELETED'")"

# --- event ids -----------------------------------------------------------------------------
# A message sent again after a crash (its delivery was recorded by a lost
# transaction) repeats its flyt.event-id, as consumers expect; two different
# messages never share one.
for t in "$T_REGISTERED" "$T_RETRY" "$T_DELETED"; do consume_all "$t"; done | jq -s . >"$WORK/all.json"
jcheck "every flyt.event-id is a UUID" "$WORK/all.json" 'length > 0 and all(.[]; eventid | isuuid)'
jcheck "messages with the same flyt.event-id are the same message" "$WORK/all.json" \
	'group_by(eventid) | all(.[]; map({topic, key, payload, headers}) | unique | length == 1)'
note "$(jval "$WORK/all.json" 'length') messages, $(jval "$WORK/all.json" '[.[] | eventid] | unique | length') distinct flyt.event-id values"

finish
