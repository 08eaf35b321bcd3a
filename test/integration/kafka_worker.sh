#!/usr/bin/env bash
#
# kafka_worker.sh — the worker against Apache Kafka itself (script/kafka.sh),
# with Kafka's own admin tools and kcat as independent clients:
#
#   A. Topic provisioning, in short (kafka_provisioning.sh has it all): the
#      produced topics that do not exist are created (1 partition,
#      retention.ms from the retention setting); an existing one gets its
#      retention.ms changed while a dynamic config already set on it
#      (max.message.bytes) is kept (librdkafka 2.0's AlterConfigs replaces
#      the whole set, so the worker reads it first); a new retention setting
#      (reload) reaches every topic, again keeping the other config.
#   B. Take-over from the Java service: the group fint-flyt-instance-service
#      has offsets another client committed (kafka-consumer-groups
#      --reset-offsets): the worker continues exactly there, and afterwards
#      kafka-consumer-groups --describe shows its progress with lag 0.
#   C. instance-received with 3 partitions: every message registered exactly
#      once, per-partition offsets stored in flyt.consumer_offset.
#   D. The broker killed with kill -9 and restarted under load: nothing lost,
#      nothing registered twice, the outbox drains, and instance-registered
#      holds no duplicate flyt.event-id (idempotent producer).
#   E. The worker killed with kill -9: consumption resumes within 5 s of its
#      restart (static group membership; the figure is printed).
#
# Own Kafka and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 900
# a fetch may bring a whole batch of large messages (section G)
KAFKA_CONFIG="$KAFKA_CONFIG;max.partition.fetch.bytes=33554432"

GROUP=fint-flyt-instance-service
PRODUCED=("$T_REGISTERED" "$T_RETRY" "$T_DELETED" "$T_REG_ERROR" "$T_RETRY_ERROR")
RETENTION_4D=345600000
RETENTION_2D=172800000
MAX_MESSAGE_BYTES=2000000

outbox_is() {
	sql_is "$1" "SELECT count(*) FROM flyt.outbox"
}

instances_at_least() {
	local n
	n=$(sql_quiet "SELECT count(*) FROM flyt.instance") || return 1
	[ "$n" -ge "$1" ]
}

# topic_configs — every topic's dynamic configs, "TOPIC NAME=VALUE" lines,
# in $WORK/configs (one run of kafka-configs for all topics).
topic_configs() {
	kafka_configs --describe --entity-type topics 2>>"$WORK/kafka-tools.err" |
		awk '
			/^Dynamic configs for topic / { t = $5; next }
			/^  [^ ]+=/ && t != "" {
				line = substr($0, 3)
				sub(/ sensitive=(true|false) synonyms=.*$/, "", line)
				print t, line
			}' >"$WORK/configs"
}

# config_of TOPIC NAME — the value in $WORK/configs; empty when not set.
config_of() {
	awk -v t="$1" -v k="$2" '$1 == t && index($2, k "=") == 1 { print substr($2, length(k) + 2); exit }' \
		"$WORK/configs"
}

# every_retention_is MS — all produced topics have retention.ms = MS.
every_retention_is() {
	local t
	topic_configs || return 1
	for t in "${PRODUCED[@]}"; do
		[ "$(config_of "$t" retention.ms)" = "$1" ] || return 1
	done
}

# --- the broker and the topics the worker does not create ------------------------

kafka_start
kafka_topics --create --topic "$T_RECEIVED" --partitions 3 --replication-factor 1 >/dev/null ||
	bail "create $T_RECEIVED with 3 partitions"
kafka_topics --create --topic "$T_DISPATCHED" --partitions 1 --replication-factor 1 >/dev/null ||
	bail "create $T_DISPATCHED"
# A produced topic that exists already, with configs of its own.
kafka_topics --create --topic "$T_DELETED" --partitions 1 --replication-factor 1 \
	--config retention.ms=1000 --config max.message.bytes=$MAX_MESSAGE_BYTES >/dev/null ||
	bail "create $T_DELETED with retention.ms and max.message.bytes"

# --- B, before the worker: what the Java service left behind ----------------------

# Four messages on each partition of instance-received, named to-P-I.
for p in 0 1 2; do
	for i in 0 1 2 3; do
		h=$(jq -c --arg s "to-$p-$i" --arg c "$(cat /proc/sys/kernel/random/uuid)" \
			'.sourceApplicationInstanceId = $s | .correlationId = $c' <<<"$FIX_HEADERS")
		produce "$T_RECEIVED" "to-$p-$i" "$FIX_VALUE" -H "$H_FLOW=$h" -p "$p" ||
			bail "produce to $T_RECEIVED partition $p" "$(tail -n 5 "$WORK/kcat.err")"
	done
done
# The Java service had consumed partition 0 up to 2, partition 1 wholly and
# partition 2 not at all.
printf '%s,0,2\n%s,1,4\n%s,2,0\n' "$T_RECEIVED" "$T_RECEIVED" "$T_RECEIVED" >"$WORK/offsets.csv"
kafka_groups --reset-offsets --group "$GROUP" --from-file "$WORK/offsets.csv" --execute \
	>"$WORK/reset.out" 2>>"$WORK/kafka-tools.err" ||
	bail "kafka-consumer-groups --reset-offsets" "$(cat "$WORK/reset.out")"
check_eq "the group's committed offsets before the worker" "0 2 1 4 2 0" \
	"$(kafka_group_offsets "$GROUP" | sort -k2,2n | awk '{ printf "%s%s %s", sep, $2, $3; sep = " " }')"

# --- the worker ----------------------------------------------------------------------

worker_cluster_start
require_worker
if wait_status_up 60; then
	pass "status UP against Kafka $KAFKA_RUNNING_VERSION"
else
	bail "status UP against Kafka $KAFKA_RUNNING_VERSION" "flyt_status(): $(show_status)"
fi

# --- A. provisioning -----------------------------------------------------------------

if wait_until 60 every_retention_is "$RETENTION_4D"; then
	pass "every produced topic has retention.ms = $RETENTION_4D (4d)"
else
	fail "every produced topic has retention.ms = $RETENTION_4D (4d)" "configs: $(cat "$WORK/configs")" \
		"server log: $(grep -E 'topic|retention' "$CLUSTER_LOG" | tail -n 10)"
fi
for t in "${PRODUCED[@]}"; do
	check_eq "$t has 1 partition" 1 "$(kafka_topic_partitions "$t")"
done
check_eq "the existing $T_DELETED keeps its max.message.bytes" "$MAX_MESSAGE_BYTES" \
	"$(config_of "$T_DELETED" max.message.bytes)"
check "the server log says which topics were created" grep -q "created topic $T_REGISTERED" "$CLUSTER_LOG"

sql "ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '2d'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 60 every_retention_is "$RETENTION_2D"; then
	pass "after a reload with 2d every produced topic has retention.ms = $RETENTION_2D"
else
	fail "after a reload with 2d every produced topic has retention.ms = $RETENTION_2D" "configs: $(cat "$WORK/configs")"
fi
check_eq "$T_DELETED still keeps its max.message.bytes" "$MAX_MESSAGE_BYTES" \
	"$(config_of "$T_DELETED" max.message.bytes)"
check_eq "no topic of ours got any config but cleanup.policy, retention.ms and segment.ms" "" \
	"$(awk '$1 !~ /^__/ && $2 !~ /^(cleanup\.policy|retention\.ms|segment\.ms)=/ && !($1 == t && $2 ~ /^max\.message\.bytes=/)' t="$T_DELETED" "$WORK/configs")"

# --- B. the take-over ------------------------------------------------------------------

if wait_until 60 sql_is 6 "SELECT count(*) FROM flyt.instance"; then
	pass "the worker registers the 6 messages the Java service had not consumed"
else
	fail "the worker registers the 6 messages the Java service had not consumed" \
		"instances: $(sql_quiet "SELECT string_agg(source_application_instance_id, ' ' ORDER BY 1) FROM flyt.instance")"
fi
if holds_for 2 sql_is 6 "SELECT count(*) FROM flyt.instance"; then
	pass "and no more (2 s)"
else
	fail "and no more" "instances: $(sql_quiet "SELECT string_agg(source_application_instance_id, ' ' ORDER BY 1) FROM flyt.instance")"
fi
check_eq "exactly the ones after the committed offsets" "to-0-2 to-0-3 to-2-0 to-2-1 to-2-2 to-2-3" \
	"$(sql "SELECT string_agg(source_application_instance_id, ' ' ORDER BY source_application_instance_id) FROM flyt.instance")"
check_eq "flyt.consumer_offset: partitions 0 and 2 at 4" "0 4 2 4" \
	"$(sql "SELECT string_agg(kafka_partition || ' ' || next_offset, ' ' ORDER BY kafka_partition) FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED'")"

group_lag_zero() {
	kafka_group_offsets "$GROUP" >"$WORK/group" || return 1
	[ "$(awk -v t="$T_RECEIVED" '$1 == t && $3 == $4 && $5 == 0' "$WORK/group" | wc -l)" = 3 ]
}
if wait_until 60 group_lag_zero; then
	pass "kafka-consumer-groups --describe: every partition of $T_RECEIVED at its end, lag 0"
else
	fail "kafka-consumer-groups --describe: every partition of $T_RECEIVED at its end, lag 0" "$(cat "$WORK/group")"
fi

# --- C. three partitions ---------------------------------------------------------------

"${CC:-cc}" -O2 -Wall -o "$WORK/flyt_produce" "$FLYT_REPO/test/integration/tools/flyt_produce.c" -lrdkafka ||
	bail "compile the test producer"
python3 "$FLYT_REPO/test/integration/tools/gen_received.py" "$WORK/c.tsv" part 300
XID0=$(sql "SELECT txid_current()")
timeout 120 "$WORK/flyt_produce" -b "$BOOTSTRAP" -t "$T_RECEIVED" <"$WORK/c.tsv" 2>>"$WORK/producer.err" ||
	fail "300 messages produced" "$(tail -n 5 "$WORK/producer.err")"
TOTAL=306
if wait_until 60 sql_is "$TOTAL" "SELECT count(*) FROM flyt.instance"; then
	pass "300 messages over 3 partitions: $TOTAL instances"
else
	fail "300 messages over 3 partitions: $TOTAL instances" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")"
fi
check_eq "each registered once" "$TOTAL" "$(sql "SELECT count(DISTINCT source_application_instance_id) FROM flyt.instance")"
# A consumed batch once took a subtransaction, and with it a transaction id,
# per message: 300 and more here.  Now one per batch and per recorded
# delivery step.
XIDS=$(( $(sql "SELECT txid_current()") - XID0 ))
note "300 messages consumed (and 300 events sent) with $XIDS transaction ids"
check "fewer transaction ids than messages ($XIDS < 300)" [ "$XIDS" -lt 300 ]
check_eq "messages came from every partition" 3 \
	"$(sql "SELECT count(*) FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED'")"
kafka_group_offsets "$GROUP" >"$WORK/group" || true
check_eq "flyt.consumer_offset equals each partition's end" \
	"$(awk -v t="$T_RECEIVED" '$1 == t { print $2, $4 }' "$WORK/group" | sort | tr '\n' ' ')" \
	"$(sql "SELECT kafka_partition || ' ' || next_offset FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED' ORDER BY 1" | tr '\n' ' ')"
if wait_until 60 group_lag_zero; then
	pass "the group's committed offsets follow: lag 0 on every partition"
else
	fail "the group's committed offsets follow: lag 0 on every partition" "$(cat "$WORK/group")"
fi

# --- D. the broker killed under load -----------------------------------------------------

N_D=2000
python3 "$FLYT_REPO/test/integration/tools/gen_received.py" "$WORK/d.tsv" broker-crash "$N_D"
timeout 300 "$WORK/flyt_produce" -b "$BOOTSTRAP" -t "$T_RECEIVED" -r 400 <"$WORK/d.tsv" 2>>"$WORK/producer.err" &
producer=$!
if wait_until 60 instances_at_least $((TOTAL + 200)); then
	at=$(sql "SELECT count(*) FROM flyt.instance")
	kafka_kill9 || fail "kill -9 Kafka"
	pass "kill -9 of Kafka while the worker ingests and produces (at $((at - TOTAL)) of $N_D)"
	sleep 2 # the outage: Kafka is down, there is nothing to wait for
	kafka_restart_checked
else
	fail "the worker ingests the load" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")"
fi
rc=0
wait "$producer" || rc=$?
check_eq "the test producer got every message acknowledged across the crash" 0 "$rc"
TOTAL=$((TOTAL + N_D))
if wait_until 180 sql_is "$TOTAL" "SELECT count(*) FROM flyt.instance"; then
	pass "all $N_D messages registered after the broker crash"
else
	fail "all $N_D messages registered after the broker crash" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")" \
		"flyt_status(): $(show_status)"
fi
check_eq "none registered twice" "$TOTAL" "$(sql "SELECT count(DISTINCT source_application_instance_id) FROM flyt.instance")"
if wait_until 120 outbox_is 0; then
	pass "the outbox drains"
else
	fail "the outbox drains" "flyt_status(): $(show_status)"
fi
check_eq "no dead letters" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"
snapshot "$T_REGISTERED"
f=$WORK/$T_REGISTERED.json
jcheck "instance-registered: one message per instance" "$f" \
	'[.[] | flow.instanceId] | unique | length == $n' --argjson n "$TOTAL"
jcheck "instance-registered: no flyt.event-id twice (idempotent producer)" "$f" \
	'([.[] | eventid] | length) == ([.[] | eventid] | unique | length)'
note "instance-registered holds $(jval "$f" length) messages for $TOTAL instances"
if wait_status_up 60; then
	pass "status UP after the broker crash"
else
	fail "status UP after the broker crash" "flyt_status(): $(show_status)"
fi

# --- E. the worker killed --------------------------------------------------------------

N_E=1500
python3 "$FLYT_REPO/test/integration/tools/gen_received.py" "$WORK/e.tsv" worker-crash "$N_E"
timeout 300 "$WORK/flyt_produce" -b "$BOOTSTRAP" -t "$T_RECEIVED" -r 300 <"$WORK/e.tsv" 2>>"$WORK/producer.err" &
producer=$!
old_pid=
if wait_until 60 instances_at_least $((TOTAL + 100)); then
	old_pid=$(status_field "->'worker'->>'pid'")
	kill -KILL "$old_pid"
	pass "kill -9 of the worker ($old_pid) while it ingests"
else
	fail "the worker ingests the second load" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")"
fi
new_worker() {
	local p
	p=$(sql_quiet "SELECT flyt_status()->'worker'->>'pid'") || return 1
	[ -n "$p" ] && [ "$p" != "$old_pid" ]
}
wait_until 60 new_worker || fail "a new worker starts" "flyt_status(): $(show_status)"
base=$(sql "SELECT count(*) FROM flyt.instance")
RESUMED_AFTER=
resumed() {
	local got
	got=$(sql_quiet "SELECT CASE WHEN count(*) > $base THEN round(EXTRACT(epoch FROM clock_timestamp()
		- (flyt_status()->'worker'->>'started_at')::timestamptz)::numeric, 1) END FROM flyt.instance") || return 1
	[ -n "$got" ] && RESUMED_AFTER=$got
}
if [ "$base" -lt $((TOTAL + N_E)) ] && wait_until 60 resumed; then
	note "consumption resumed ${RESUMED_AFTER} s after the worker restarted"
	check "consumption resumes within 5 s of the worker's restart (${RESUMED_AFTER} s)" \
		awk -v s="$RESUMED_AFTER" 'BEGIN { exit !(s < 5) }'
else
	fail "consumption resumes after the worker's restart" "instances: $base"
fi
rc=0
wait "$producer" || rc=$?
check_eq "the test producer of the second load succeeded" 0 "$rc"
TOTAL=$((TOTAL + N_E))
if wait_until 120 sql_is "$TOTAL" "SELECT count(*) FROM flyt.instance"; then
	pass "all $N_E messages registered across the worker crash"
else
	fail "all $N_E messages registered across the worker crash" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")"
fi
check_eq "none registered twice" "$TOTAL" "$(sql "SELECT count(DISTINCT source_application_instance_id) FROM flyt.instance")"

# --- G. memory of a batch of large messages ----------------------------------------------
# A consumed batch once kept every message's parse trees, jsonb copies and
# tuple tables until it committed (about 10 times the batch's bytes); each
# message now has memory of its own.  20 messages of 700 kB (14 MB; the
# embedded broker would drop most of them) may grow the worker's peak
# memory by less than 40 MB.
WPID=$(status_field "->'worker'->>'pid'")
hwm() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$WPID/status"; }
head -c 716800 /dev/zero | tr '\0' y >"$WORK/filler"
V=$(jq -c --rawfile f "$WORK/filler" '.valuePerKey.filler = $f' <<<"$FIX_VALUE")
for i in $(seq 20); do
	printf 'big-%s\t%s\t%s\n' "$i" "$(jq -c --arg s "big-$i" '.sourceApplicationInstanceId = $s' <<<"$FIX_HEADERS")" "$V"
done >"$WORK/g.tsv"
before=$(sql "SELECT count(*) FROM flyt.instance")
h0=$(hwm)
timeout 120 "$WORK/flyt_produce" -b "$BOOTSTRAP" -t "$T_RECEIVED" <"$WORK/g.tsv" 2>>"$WORK/producer.err" ||
	fail "20 messages of 700 kB produced" "$(tail -n 3 "$WORK/producer.err")"
if wait_until 60 sql_is $((before + 20)) "SELECT count(*) FROM flyt.instance"; then
	pass "20 messages of 700 kB registered"
else
	fail "20 messages of 700 kB registered" "instances: $(sql_quiet "SELECT count(*) FROM flyt.instance")"
fi
h1=$(hwm)
note "worker peak memory: $h0 kB -> $h1 kB over 20 messages of 700 kB"
if [ -n "${FLYT_PG_PRELOAD:-}" ]; then
	note "peak memory not checked: the server runs with $FLYT_PG_PRELOAD (make asan)"
else
	check "they grow the worker's peak memory by less than 40 MB ($(((h1 - h0) / 1024)) MB)" [ $((h1 - h0)) -lt 40960 ]
fi

# --- F. per-key order with a message refused in flight -----------------------------------
# The broker refuses the retry (its topic allows 2000 bytes, the DTO is
# ~6 kB) in the delivery report, i.e. after the row went out.  The
# instance's next event (instance-deleted, dispatched meanwhile) must not
# overtake it: it waits until the retry is dead-lettered.  It was sent at
# once while the retry was in flight.  The broker stamps instance-deleted
# with its own clock (LogAppendTime), to be compared with the dead
# letter's time: the order shows whatever the timing of this script (a
# look at the topic while the retry waited for its redelivery found the
# message there when the look came late, after the redelivery).
kafka_configs --alter --entity-type topics --entity-name "$T_RETRY" --add-config max.message.bytes=2000 \
	>/dev/null 2>>"$WORK/kafka-tools.err" || fail "limit $T_RETRY to 2000 bytes"
kafka_configs --alter --entity-type topics --entity-name "$T_DELETED" --add-config message.timestamp.type=LogAppendTime \
	>/dev/null 2>>"$WORK/kafka-tools.err" || fail "$T_DELETED stamped by the broker"
sql "ALTER SYSTEM SET flyt_instance.redelivery_max_no = 1" >/dev/null
sql "ALTER SYSTEM SET flyt_instance.redelivery_millis = 1000" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
head -c 6000 /dev/zero | tr '\0' x >"$WORK/filler"
BIG=$(jq -c --rawfile f "$WORK/filler" '.valuePerKey.filler = $f' <<<"$FIX_VALUE")
BIG_ID=$(sql -v h="$FIX_HEADERS" -v v="$BIG" "SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)")
deleted_before=$(topic_count "$T_DELETED")
sql "BEGIN; SELECT flyt_retry($BIG_ID); SELECT flyt_instance_dispatched('$(jq -c --argjson i "$BIG_ID" '.instanceId = $i' <<<"$FIX_HEADERS")'::jsonb); COMMIT;" >/dev/null
refused_once() {
	sql_is t "SELECT coalesce(bool_or(attempts >= 1), false) FROM flyt.outbox WHERE key = '$BIG_ID' AND event_name = 'instance-requested-for-retry'"
}
if wait_until 60 refused_once; then
	pass "the broker refuses the large retry in flight (attempts counted)"
else
	fail "the broker refuses the large retry in flight" "outbox: $(sql_quiet "SELECT jsonb_agg(to_jsonb(o) - 'value') FROM flyt.outbox o")"
fi
if wait_until 60 sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE message_key = convert_to('$BIG_ID', 'UTF8')"; then
	pass "the refused retry is dead-lettered after its redelivery"
else
	fail "the refused retry is dead-lettered after its redelivery" "flyt_status(): $(show_status)"
fi
if wait_until 60 topic_has_at_least "$T_DELETED" $((deleted_before + 1)); then
	pass "then instance-deleted follows"
else
	fail "then instance-deleted follows" "outbox: $(sql_quiet "SELECT jsonb_agg(to_jsonb(o) - 'value') FROM flyt.outbox o")"
fi
DEAD_MS=$(sql "SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM flyt.dead_letter
               WHERE message_key = convert_to('$BIG_ID', 'UTF8')")
DELETED_MS=$(consume_all "$T_DELETED" | jq -s --arg k "$BIG_ID" '[.[] | select(.key == $k) | .ts] | min // 0')
check "the instance's instance-deleted reached the broker after the retry was dead-lettered ($DELETED_MS >= $DEAD_MS ms)" \
	[ "${DELETED_MS:-0}" -ge "${DEAD_MS:-1}" ]

finish
