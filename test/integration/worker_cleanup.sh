#!/usr/bin/env bash
#
# worker_cleanup.sh — the scheduled cleanup of the worker: initial delay 2 s,
# interval 3 s, batches of 2.  Five instances registered through SQL, three
# aged by 90 days (beyond the 60-day retention): the three disappear, the
# two young ones stay, flyt.cleanup_run records succeeded runs whose deleted
# counts add up to 3, three instance-deleted messages (null value, key =
# instance id) reach Kafka, runs keep coming every interval and
# flyt_status()->'cleanup' shows the last run and next_run_at.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2119,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

outbox_is() {
	sql_is "$1" "SELECT count(*) FROM flyt.outbox"
}

runs_dump() {
	sql_quiet "SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY id), '[]') FROM flyt.cleanup_run r"
}

broker_start
worker_cluster_start \
	-c "flyt_instance.cleanup_initial_delay = '2s'" \
	-c "flyt_instance.cleanup_interval = '3s'" \
	-c "flyt_instance.cleanup_batch_size = 2"
require_worker

if wait_status_up 45; then
	pass "flyt_status()->>'status' becomes UP"
else
	bail "flyt_status()->>'status' becomes UP" "flyt_status(): $(show_status)"
fi

ids=()
for i in 1 2 3 4 5; do
	h=$(jq -c --arg c "$(cat /proc/sys/kernel/random/uuid)" --arg s "cleanup-$i" \
		'.correlationId = $c | .sourceApplicationInstanceId = $s' <<<"$FIX_HEADERS")
	ids+=("$(sql -v h="$h" -v v="$FIX_VALUE" "SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)")")
done
OLD="${ids[0]},${ids[1]},${ids[2]}"
YOUNG="${ids[3]},${ids[4]}"
OLD_JSON="[$OLD]"
if wait_until "$WAIT" outbox_is 0; then
	pass "five instance-registered messages delivered"
else
	fail "five instance-registered messages delivered"
fi
check_eq "no instance-deleted message yet" 0 "$(topic_count "$T_DELETED")"

aged=$(sql "WITH u AS (UPDATE flyt.instance SET created_at = now() - interval '90 days' WHERE id IN ($OLD) RETURNING 1) SELECT count(*) FROM u")
check_eq "three instances aged by 90 days" 3 "$aged"
aged_at=$SECONDS

cleaned=1
if wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.instance WHERE id IN ($OLD)"; then
	pass "the three old instances are deleted by the scheduled cleanup (in $((SECONDS - aged_at)) s)"
else
	cleaned=0
	wpid=$(status_field "->'worker'->>'pid'")
	fail "the three old instances are deleted by the scheduled cleanup" \
		"cleanup runs: $(runs_dump)" "cleanup status: $(status_field "->'cleanup'")" \
		"worker pid $wpid: $(ps -o %cpu=,time= -p "$wpid" 2>/dev/null || echo gone) (%cpu, cpu time)" \
		"worker activity: $(sql_quiet "SELECT state || ' | ' || coalesce(wait_event, '-') || ' | ' || query FROM pg_stat_activity WHERE pid = $wpid")"
fi
check_eq "the two young instances stay" 2 "$(sql "SELECT count(*) FROM flyt.instance WHERE id IN ($YOUNG)")"

# The run that deleted them may still be finishing its row.
if wait_until 15 sql_is 3 "SELECT coalesce(sum(deleted), 0) FROM flyt.cleanup_run WHERE status = 'succeeded'"; then
	pass "succeeded cleanup runs deleted 3 in all"
else
	fail "succeeded cleanup runs deleted 3 in all" "cleanup runs: $(runs_dump)"
fi
check_eq "no failed cleanup run" 0 "$(sql "SELECT count(*) FROM flyt.cleanup_run WHERE status = 'failed'")"
check_eq "deleted_without_event is 0 (all had flow headers)" 0 \
	"$(sql "SELECT coalesce(sum(deleted_without_event), 0) FROM flyt.cleanup_run")"
check_eq "succeeded runs have finished_at and no error" 0 \
	"$(sql "SELECT count(*) FROM flyt.cleanup_run WHERE status = 'succeeded' AND (finished_at IS NULL OR error IS NOT NULL)")"
check_eq "runs' cutoff is about 60 days back" 0 \
	"$(sql "SELECT count(*) FROM flyt.cleanup_run WHERE cutoff NOT BETWEEN started_at - interval '60 days 1 minute' AND started_at - interval '59 days 23 hours 59 minutes'")"
check_eq "history keeps one DELETED row per deleted instance" 3 \
	"$(sql "SELECT count(*) FROM flyt.instance_event WHERE instance_id IN ($OLD) AND event_type = 'DELETED'")"

if [ "$cleaned" = 0 ]; then
	note "skipping the instance-deleted checks: the cleanup did not delete the instances"
else
	if wait_messages "$T_DELETED" 3; then
		pass "three instance-deleted messages reach Kafka"
	else
		fail "three instance-deleted messages reach Kafka" "outbox: $(sql_quiet 'SELECT count(*) FROM flyt.outbox')"
	fi
	F=$WORK/$T_DELETED.json
	jcheck "exactly three instance-deleted messages" "$F" 'length == 3'
	jcheck "their keys are the three old instance ids" "$F" '[.[] | .key | tonumber] | sort == $old' --argjson old "$OLD_JSON"
	jcheck "their values are null" "$F" 'length == 3 and all(.[]; .payload == null)'
	jcheck "their flow headers carry instanceId = key" "$F" 'length == 3 and all(.[]; (flow.instanceId | tostring) == .key)'
	jcheck "their flow headers carry the stored sourceApplicationInstanceIds" "$F" \
		'[.[] | flow.sourceApplicationInstanceId] | sort == ["cleanup-1", "cleanup-2", "cleanup-3"]'
	jcheck "their flyt.event-id headers are UUIDs" "$F" 'length == 3 and all(.[]; eventid | isuuid)'
	if wait_until "$WAIT" outbox_is 0; then
		pass "outbox empty after the cleanup"
	else
		fail "outbox empty after the cleanup"
	fi
fi

# --- the schedule, seen from flyt_status() ----------------------------------------------------

check_eq "flyt_status()->'cleanup'->'last_run'->>'status' is succeeded" succeeded \
	"$(status_field "->'cleanup'->'last_run'->>'status'")"
NEXT=$(status_field "->'cleanup'->>'next_run_at'")
note "next_run_at: $NEXT"
check "flyt_status()->'cleanup'->>'next_run_at' is set" [ -n "$NEXT" ]
check_eq "next_run_at is a timestamp near now (interval 3 s)" t \
	"$(sql_quiet -v n="$NEXT" "SELECT :'n'::timestamptz BETWEEN now() - interval '10 seconds' AND now() + interval '10 seconds'" || echo "<not a timestamp>")"

last_run=$(sql "SELECT coalesce(max(id), 0) FROM flyt.cleanup_run")
if wait_until 15 sql_is t "SELECT count(*) > 0 FROM flyt.cleanup_run WHERE id > $last_run AND status = 'succeeded'"; then
	pass "another run follows within the interval"
else
	fail "another run follows within the interval" "cleanup runs: $(runs_dump)"
fi
check_eq "later runs delete nothing more" 3 \
	"$(sql "SELECT coalesce(sum(deleted), 0) FROM flyt.cleanup_run")"
check_eq "the young instances are still there" 2 "$(sql "SELECT count(*) FROM flyt.instance")"

finish
