#!/usr/bin/env bash
#
# worker_crash.sh — exactly-once ingestion through crashes of the worker and
# of the whole server.
#
#   1. 3000 instance-received messages (each with its own
#      sourceApplicationInstanceId and correlationId) are produced at a
#      bounded rate; while the worker ingests them (0 < instances < 3000)
#      the worker gets kill -9 (the postmaster then resets every backend and
#      starts the worker again).  All 3000 arrive, none twice.
#   2. 2000 more; while they are ingested the server stops in immediate mode
#      (a crash: no shutdown checkpoint) and starts again.
#   3. Exactly 5000 instances, 5000 distinct sourceApplicationInstanceIds,
#      5000 REGISTERED history rows, no dead letters, consumer_offset at 5000,
#      the outbox drains, and every instance id appears in the flow headers of
#      an instance-registered message on Kafka (the same message may come
#      twice: at-least-once production; but one flyt.event-id per instance).
#
# Own cluster and broker; runs from the repository root or anywhere.
# Prints ok/not ok lines and "N passed, M failed"; exit 1 on failure.

# Functions called through lc_wait look unreachable to shellcheck; helpers
# with optional arguments are called without any.
# shellcheck disable=SC2317,SC2119
set -euo pipefail

# shellcheck source=test/integration/lib_crash.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_crash.sh"

N1=3000
N2=2000
TOTAL=$((N1 + N2))
RATE=${FLYT_CRASH_RATE:-500} # messages/s the test producer sends

lc_init "${FLYT_CRASH_TIME_LIMIT:-420}"
lc_broker_start
lc_cluster_create_worker
cluster_start
cluster_env
lc_create_extension || lc_finish

lc_build_producer
lc_gen_messages "$LC_WORK/a.tsv" crash-a "$N1"
lc_gen_messages "$LC_WORK/b.tsv" crash-b "$N2"

if lc_wait 30 lc_state_in running; then
	lc_pass "worker is running"
else
	lc_bail "worker is running" "state '$(lc_state)'"
fi

# consumer_assigned NAME — waits until the consumer has its partitions, so
# that the worker ingests the messages as the producer sends them (over
# seconds) and can be stopped in the middle; a consumer still joining its
# group would take them all at once when it gets there, and a fast ingest
# could be over before a check sees it in progress.
consumer_assigned() {
	if lc_wait 60 lc_sql_true "SELECT flyt_status()->'consumer'->'assignment'->>'state' = 'assigned'"; then
		lc_pass "$1: the consumer has its partitions"
	else
		lc_fail "$1: the consumer has its partitions within 60 s" "$(lc_sql "SELECT flyt_status()->'consumer'")"
	fi
}

# --- 1. kill -9 of the worker while it ingests ---------------------------------

consumer_assigned "before the kill -9"
lc_produce_bg "$LC_WORK/a.tsv" "$RATE"
producer=$LC_PRODUCER_PID
pid=
if lc_wait 60 lc_count_between 0 "$N1"; then
	pid=$(lc_worker_pid)
	if [ -z "$pid" ]; then
		pid=$(lc_sql "SELECT flyt_status()->'worker'->>'pid'") || pid=
	fi
	at=$(lc_sql 'SELECT count(*) FROM flyt.instance') || at='?'
	if [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid"; then
		lc_pass "kill -9 worker $pid while ingesting (at $at of $N1)"
	else
		lc_fail "kill -9 the worker while ingesting" "no worker pid ('$pid'; backends: $(lc_sql "SELECT string_agg(backend_type, ', ') FROM pg_stat_activity"))"
	fi
else
	lc_fail "the worker starts ingesting within 60 s" "instances: $(lc_sql 'SELECT count(*) FROM flyt.instance')"
fi

if lc_wait 15 grep -q 'flyt_instance worker.*terminated by signal 9' "$CLUSTER_LOG"; then
	lc_pass "the server log shows the worker killed by signal 9"
else
	lc_fail "the server log shows the worker killed by signal 9" "$(grep -E 'terminated|signal' "$CLUSTER_LOG" | tail -n 3)"
fi
if lc_wait 60 lc_worker_pid_is_not "$pid"; then
	lc_pass "the worker is back after kill -9 (pid $(lc_worker_pid))"
else
	lc_fail "the worker is back after kill -9 within 60 s"
fi
# How long after the new worker started does consumption resume?  Only
# measured here: librdkafka's mock coordinator ignores static membership
# (group.instance.id) and holds each JoinGroup ~5 s, so a restarted member
# waits ~10 s on it.  test/integration/kafka_resume.sh asserts the figure
# against Apache Kafka.
resumed_after() {
	local got
	got=$(lc_sql "SELECT CASE WHEN count(*) > $1 THEN round(EXTRACT(epoch FROM clock_timestamp()
		- (flyt_status()->'worker'->>'started_at')::timestamptz)::numeric, 1) END FROM flyt.instance") || return 1
	[ -n "$got" ] && RESUMED_AFTER=$got
}
RESUMED_AFTER=
base=$(lc_sql 'SELECT count(*) FROM flyt.instance') || base=0
if [ "$base" -lt "$N1" ] && lc_wait 60 resumed_after "$base"; then
	lc_pass "consumption resumes after the worker's restart"
	echo "# consumption resumed ${RESUMED_AFTER} s after the worker's restart (embedded broker)"
else
	lc_fail "consumption resumes after the worker's restart" "instances: $base of $N1"
fi
rc=0
lc_wait_pid "$producer" 120 || rc=$?
lc_eq "producer of the first $N1 messages succeeded" 0 "$rc"

if lc_wait 120 lc_count_at_least "$N1"; then
	lc_pass "all $N1 first messages ingested"
else
	lc_fail "all $N1 first messages ingested within 120 s" "instances: $(lc_sql 'SELECT count(*) FROM flyt.instance')"
fi
lc_eq "exactly $N1 instances after the worker crash" "$N1" \
	"$(lc_sql 'SELECT count(*) FROM flyt.instance')"
lc_eq "$N1 distinct sourceApplicationInstanceIds after the worker crash" "$N1" \
	"$(lc_sql 'SELECT count(DISTINCT source_application_instance_id) FROM flyt.instance')"

# --- 2. immediate stop of the server while it ingests -------------------------

consumer_assigned "before the immediate stop"
lc_produce_bg "$LC_WORK/b.tsv" "$RATE"
producer=$LC_PRODUCER_PID
if lc_wait 60 lc_count_between "$N1" "$TOTAL"; then
	at=$(lc_sql 'SELECT count(*) FROM flyt.instance') || at='?'
	cluster_crash
	lc_pass "immediate stop while ingesting (at $at of $TOTAL)"
else
	lc_fail "the worker ingests the second batch within 60 s" "instances: $(lc_sql 'SELECT count(*) FROM flyt.instance')"
	cluster_crash
fi
if cluster_start; then
	lc_pass "server starts after the immediate stop"
else
	lc_bail "server starts after the immediate stop"
fi
if lc_wait 60 lc_worker_alive; then
	lc_pass "the worker runs after the restart"
else
	lc_fail "the worker runs within 60 s of the restart"
fi
rc=0
lc_wait_pid "$producer" 120 || rc=$?
lc_eq "producer of the next $N2 messages succeeded" 0 "$rc"

# --- 3. the end state ------------------------------------------------------------

if lc_wait 180 lc_count_at_least "$TOTAL"; then
	lc_pass "all $TOTAL messages ingested"
else
	lc_fail "all $TOTAL messages ingested within 180 s" "instances: $(lc_sql 'SELECT count(*) FROM flyt.instance')"
fi
lc_eq "exactly $TOTAL instances" "$TOTAL" "$(lc_sql 'SELECT count(*) FROM flyt.instance')"
lc_eq "$TOTAL distinct sourceApplicationInstanceIds" "$TOTAL" \
	"$(lc_sql 'SELECT count(DISTINCT source_application_instance_id) FROM flyt.instance')"
lc_eq "every expected sourceApplicationInstanceId is there" "$TOTAL" \
	"$(lc_sql "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id IN (
		SELECT 'crash-a-' || g FROM generate_series(0, $N1 - 1) g
		UNION ALL SELECT 'crash-b-' || g FROM generate_series(0, $N2 - 1) g)")"
lc_eq "one REGISTERED history row per instance" "$TOTAL" \
	"$(lc_sql "SELECT count(*) FROM flyt.instance_event WHERE event_type = 'REGISTERED'")"
lc_eq "no dead letters" 0 "$(lc_sql 'SELECT count(*) FROM flyt.dead_letter')"
lc_eq "consumer_offset of instance-received is $TOTAL (sum over partitions)" "$TOTAL" \
	"$(lc_sql "SELECT coalesce(sum(next_offset), 0) FROM flyt.consumer_offset WHERE topic = '$LC_T_RECEIVED'")"

if lc_wait 120 lc_sql_true 'SELECT count(*) = 0 FROM flyt.outbox'; then
	lc_pass "the outbox drains to 0"
else
	lc_fail "the outbox drains to 0 within 120 s" "$(lc_sql 'SELECT count(*) FROM flyt.outbox') rows left; status: $(lc_sql 'SELECT flyt_status()')"
fi

# Every instance id must be on instance-registered; a message may come
# twice (at-least-once), but never from two outbox rows (flyt.event-id).
lc_sql 'SELECT id FROM flyt.instance ORDER BY 1' | sort -u >"$LC_WORK/db_ids"
: >"$LC_WORK/pairs"
: >"$LC_WORK/kafka_ids"
kafka_has_all() {
	lc_registered_pairs "$LC_WORK/pairs" || return 1
	cut -d' ' -f1 "$LC_WORK/pairs" | sort -u >"$LC_WORK/kafka_ids"
	[ -z "$(comm -23 "$LC_WORK/db_ids" "$LC_WORK/kafka_ids")" ]
}
if lc_wait 60 kafka_has_all; then
	lc_pass "every instance id is on instance-registered"
else
	missing=$(comm -23 "$LC_WORK/db_ids" "$LC_WORK/kafka_ids" | wc -l)
	lc_fail "every instance id is on instance-registered" "$missing of $TOTAL missing; first: $(comm -23 "$LC_WORK/db_ids" "$LC_WORK/kafka_ids" | head -n 5 | tr '\n' ' ')"
fi
lc_eq "instance-registered names no other instance ids" "" \
	"$(comm -13 "$LC_WORK/db_ids" "$LC_WORK/kafka_ids" | head -n 5 | tr '\n' ' ')"
lc_eq "each instance id has one flyt.event-id on instance-registered" "" \
	"$(cut -d' ' -f1 "$LC_WORK/pairs" | uniq -d | head -n 5 | tr '\n' ' ')"
msgs=$(timeout "$(lc_budget 60)" kcat -C -q -b "$LC_BROKER_ADDR" -t "$LC_T_REGISTERED" \
	-o beginning -e -f 'x\n' 2>/dev/null | wc -l) || msgs='?'
echo "# instance-registered messages on Kafka: $msgs (for $TOTAL instances)"

lc_finish
