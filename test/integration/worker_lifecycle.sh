#!/usr/bin/env bash
#
# worker_lifecycle.sh — the background worker's life around the server:
#
#   A. Without shared_preload_libraries: CREATE EXTENSION, flyt_register_instance
#      and flyt_retry work; flyt_status() is DOWN, worker.running false, the
#      reason names shared_preload_libraries.
#   B. Preloaded, before CREATE EXTENSION: the worker is alive (pg_stat_activity);
#      after CREATE EXTENSION its state becomes running; DROP EXTENSION does
#      not hang (10 s) and the worker survives it (same pid); CREATE again.
#   C. CREATE DATABASE / DROP DATABASE do not hang (10 s) while it runs.
#   D. SIGHUP: empty kafka_bootstrap_servers -> kafka_off; back -> running.
#   E. kill -TERM of the worker alone: the postmaster starts a new one (30 s).
#   F. A standby (pg_basebackup -R): its worker is alive and in state standby;
#      after pg_ctl promote it is running or kafka_off.
#   G. pg_ctl -m fast stop with the worker running finishes within 15 s.
#
# Own clusters and broker.  Prints ok/not ok lines and "N passed, M failed";
# exit 1 on failure.
# Functions called through lc_wait look unreachable to shellcheck; helpers
# with optional arguments are called without any.
# shellcheck disable=SC2317,SC2119
set -euo pipefail

# shellcheck source=test/integration/lib_crash.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_crash.sh"

lc_init "${FLYT_LIFECYCLE_TIME_LIMIT:-300}"
BINDIR=$("${PG_CONFIG:-pg_config}" --bindir)

HEADERS=$(cat "${FLYT_FIXTURES:-$LC_REPO/test/fixtures}/instance-received.headers.json" 2>/dev/null ||
	echo '{"sourceApplicationId":2,"correlationId":"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11","sourceApplicationInstanceId":"lc-1"}')
VALUE='{"valuePerKey":{"tittel":"t"},"objectCollectionPerKey":{}}'

# timed SECONDS CMD... — run CMD bounded by SECONDS; sets $took (seconds,
# with decimals) and returns CMD's status (124 on timeout).
timed() {
	local limit=$1 t0 rc=0
	shift
	t0=$EPOCHREALTIME
	timeout "$limit" "$@" >"$LC_WORK/timed.out" 2>&1 || rc=$?
	took=$(python3 -c "print(f'{$EPOCHREALTIME - $t0:.1f}')")
	return "$rc"
}

# --- A. no shared_preload_libraries --------------------------------------------

cluster_create -l '' \
	-c "flyt_instance.org_id = '$LC_ORG'" \
	-c "max_prepared_transactions = 0"
cluster_start
cluster_env
rc=0
lc_create_extension || rc=$?
if [ "$rc" = 2 ]; then lc_finish; fi
if [ "$rc" = 0 ]; then
	id=$(lc_sql "SELECT flyt_register_instance('$HEADERS'::jsonb, '$VALUE'::jsonb)") || id=
	if [[ $id =~ ^[0-9]+$ ]]; then
		lc_pass "without preload: flyt_register_instance works (id $id)"
	else
		lc_fail "without preload: flyt_register_instance works" "$id"
	fi
	out=$(lc_sql "SELECT flyt_retry(${id:-0})") || true
	if [[ $out =~ ^[0-9a-f-]{36}$ ]]; then
		lc_pass "without preload: flyt_retry works"
	else
		lc_fail "without preload: flyt_retry works" "$out"
	fi
	status=$(lc_sql 'SELECT flyt_status()') || true
	lc_eq "without preload: status DOWN" DOWN "$(lc_sql "SELECT flyt_status()->>'status'")"
	lc_eq "without preload: worker.running false" false "$(lc_sql "SELECT flyt_status()->'worker'->>'running'")"
	if [[ $(lc_sql "SELECT flyt_status()->>'reason'") == *shared_preload_libraries* ]]; then
		lc_pass "without preload: the reason names shared_preload_libraries"
	else
		lc_fail "without preload: the reason names shared_preload_libraries" "flyt_status() = $status"
	fi
fi
cluster_destroy

# --- B. preloaded; extension created later, dropped, created again -------------

lc_broker_start
lc_cluster_create_worker
cluster_start
cluster_env

if lc_wait 30 lc_worker_alive; then
	lc_pass "before CREATE EXTENSION the worker is alive (pid $(lc_worker_pid))"
else
	lc_fail "before CREATE EXTENSION the worker is alive" "backends: $(lc_sql "SELECT string_agg(backend_type, ', ') FROM pg_stat_activity")"
fi
lc_create_extension || lc_finish
if lc_wait 30 lc_state_in running kafka_off; then
	lc_pass "after CREATE EXTENSION the state is $(lc_state)"
else
	lc_fail "after CREATE EXTENSION the state becomes running within 30 s" "state '$(lc_state)'"
fi

pid=$(lc_worker_pid)
rc=0
timed 10 psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'DROP EXTENSION flyt_instance' || rc=$?
if [ "$rc" = 0 ]; then
	lc_pass "DROP EXTENSION finishes (${took} s)"
else
	lc_fail "DROP EXTENSION finishes within 10 s" "exit $rc after ${took} s: $(cat "$LC_WORK/timed.out")"
fi
# A worker that died would be replaced: watch its pid for 2 s.
if lc_wait 2 lc_worker_pid_is_not "$pid"; then
	lc_fail "the worker survives DROP EXTENSION" "pid $pid, now '$(lc_worker_pid)'"
else
	lc_eq "the worker survives DROP EXTENSION (same pid)" "$pid" "$(lc_worker_pid)"
fi
if out=$(lc_sql 'CREATE EXTENSION flyt_instance'); then
	lc_pass "CREATE EXTENSION again"
else
	lc_fail "CREATE EXTENSION again" "$out"
fi
if lc_wait 30 lc_state_in running kafka_off; then
	lc_pass "after CREATE EXTENSION again the state is $(lc_state)"
else
	lc_fail "after CREATE EXTENSION again the state becomes running within 30 s" "state '$(lc_state)'"
fi

# --- C. CREATE / DROP DATABASE while the worker runs ----------------------------

for stmt in 'CREATE DATABASE lc_x' 'DROP DATABASE lc_x'; do
	rc=0
	timed 10 psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "$stmt" || rc=$?
	if [ "$rc" = 0 ]; then
		lc_pass "$stmt finishes (${took} s)"
	else
		lc_fail "$stmt finishes within 10 s" "exit $rc after ${took} s: $(cat "$LC_WORK/timed.out")"
	fi
done

# --- D. SIGHUP --------------------------------------------------------------------

lc_sql "ALTER SYSTEM SET flyt_instance.kafka_bootstrap_servers = ''" >/dev/null
lc_sql 'SELECT pg_reload_conf()' >/dev/null
if lc_wait 20 lc_state_in kafka_off; then
	lc_pass "SIGHUP with empty kafka_bootstrap_servers: kafka_off"
else
	lc_fail "SIGHUP with empty kafka_bootstrap_servers: kafka_off within 20 s" "state '$(lc_state)'"
fi
lc_sql 'ALTER SYSTEM RESET flyt_instance.kafka_bootstrap_servers' >/dev/null
lc_sql 'SELECT pg_reload_conf()' >/dev/null
if lc_wait 20 lc_state_in running; then
	lc_pass "SIGHUP with kafka_bootstrap_servers back: running"
else
	lc_fail "SIGHUP with kafka_bootstrap_servers back: running within 20 s" "state '$(lc_state)'"
fi

if grep -E 'terminated by signal|was terminated|exited with exit code' "$CLUSTER_LOG" >"$LC_WORK/crashes"; then
	lc_fail "no backend or worker died so far" "$(head -n 5 "$LC_WORK/crashes")"
else
	lc_pass "no backend or worker died so far (server log)"
fi

# --- E. kill -TERM of the worker alone -------------------------------------------

pid=$(lc_worker_pid)
if [ -n "$pid" ] && kill -TERM "$pid"; then
	if lc_wait 30 lc_worker_pid_is_not "$pid"; then
		lc_pass "after kill -TERM $pid the postmaster starts a new worker (pid $(lc_worker_pid))"
	else
		lc_fail "after kill -TERM $pid the postmaster starts a new worker within 30 s" \
			"worker pid now '$(lc_worker_pid)'; flyt_status()->'worker' = $(lc_sql "SELECT flyt_status()->'worker'")"
	fi
	if lc_wait 30 lc_state_in running; then
		lc_pass "the new worker is running"
	else
		lc_fail "the new worker is running within 30 s" "state '$(lc_state)'"
	fi
else
	lc_fail "kill -TERM the worker" "no worker pid"
fi

# --- F. standby, then promotion ----------------------------------------------------

if ! lc_standby_create; then
	lc_fail "pg_basebackup -R of the primary"
elif ! lc_standby_start; then
	lc_fail "the standby starts"
	lc_standby_log_tail
else
	lc_pass "standby from pg_basebackup -R is up"
	sb_ok=1
	if lc_wait 30 lc_on_standby lc_sql_true 'SELECT pg_is_in_recovery()'; then
		lc_pass "the standby is in recovery"
	else
		lc_fail "the standby is in recovery"
		sb_ok=0
	fi
	# A worker waiting for promotion need not have a database connection
	# yet, and then is not in pg_stat_activity: check its process instead.
	if lc_wait 30 lc_on_standby lc_worker_process_alive; then
		lc_pass "on the standby the worker process is alive (pid $(lc_on_standby lc_status_pid))"
	else
		lc_fail "on the standby the worker process is alive within 30 s" \
			"flyt_status() = $(lc_on_standby lc_sql 'SELECT flyt_status()'); backends: $(lc_on_standby lc_sql "SELECT string_agg(backend_type, ', ') FROM pg_stat_activity")"
	fi
	if lc_on_standby lc_worker_alive; then
		echo "# on the standby the worker is in pg_stat_activity"
	else
		echo "# on the standby the worker is not in pg_stat_activity (no database connection while it waits)"
	fi
	if lc_wait 30 lc_on_standby lc_state_in standby; then
		lc_pass "on the standby the state is standby"
	else
		lc_fail "on the standby the state is standby within 30 s" \
			"flyt_status() = $(lc_on_standby lc_sql 'SELECT flyt_status()')"
	fi
	# A lone SIGTERM to the waiting worker: it exits with code 1, so the
	# postmaster starts it again (with exit code 0 it never did, and the
	# promoted server had no worker).
	sb_pid=$(lc_on_standby lc_status_pid)
	if [ -n "$sb_pid" ] && kill -TERM "$sb_pid" 2>/dev/null; then
		sb_new() {
			local p
			p=$(lc_on_standby lc_status_pid) || return 1
			[ -n "$p" ] && [ "$p" != "$sb_pid" ]
		}
		if lc_wait 30 sb_new; then
			lc_pass "after kill -TERM of the standby's worker the postmaster starts it again"
		else
			lc_fail "after kill -TERM of the standby's worker the postmaster starts it again within 30 s" \
				"flyt_status() = $(lc_on_standby lc_sql 'SELECT flyt_status()')"
		fi
	else
		lc_fail "kill -TERM the standby's worker" "no pid ('$sb_pid')"
	fi
	if [ "$sb_ok" = 1 ] && lc_standby_promote; then
		lc_pass "pg_ctl promote"
		if lc_wait 30 lc_on_standby lc_state_in running kafka_off; then
			lc_pass "after promotion the state is $(lc_on_standby lc_state)"
		else
			lc_fail "after promotion the state becomes running within 30 s" \
				"flyt_status() = $(lc_on_standby lc_sql 'SELECT flyt_status()')"
		fi
	else
		lc_fail "pg_ctl promote"
	fi
	[ "$lc_failed" = 0 ] || lc_standby_log_tail
fi
lc_standby_destroy

# --- G. fast stop with the worker running --------------------------------------------

if ! lc_state_in running; then
	# E may have left no worker: restart the server for a fresh one.
	echo "# no running worker (state '$(lc_state)'): restarting the server"
	cluster_restart
fi
if lc_wait 30 lc_state_in running; then
	lc_pass "the worker is running before the fast stop"
else
	lc_fail "the worker is running before the fast stop" "state '$(lc_state)'"
fi
rc=0
owner=()
if [ "$(id -u)" -eq 0 ]; then owner=(runuser -u postgres --); fi
cd "$CLUSTER_DIR"
timed 15 "${owner[@]}" "$BINDIR/pg_ctl" -D "$CLUSTER_DATA" -m fast -w -t 60 stop || rc=$?
cd - >/dev/null
if [ "$rc" = 0 ]; then
	lc_pass "pg_ctl -m fast stop finishes (${took} s)"
else
	lc_fail "pg_ctl -m fast stop finishes within 15 s" "exit $rc after ${took} s"
fi

lc_finish
