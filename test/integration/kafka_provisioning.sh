#!/usr/bin/env bash
#
# kafka_provisioning.sh — the worker's topic provisioning against Apache
# Kafka itself (script/kafka.sh), as the Java service's createOrModifyTopics
# did it (INTEROP.md section 4).  Kafka's own kafka-topics and kafka-configs
# are the independent view; the broker's request log (KAFKA_REQUEST_LOG)
# shows every CreateTopics and AlterConfigs the worker sent.
#
#   0. The worker starts while Kafka is down: one WARNING, and once Kafka is
#      up the worker provisions (it asks again 15 s after a request the
#      brokers did not answer).
#   1. Start (legacy error topics, topic_replication_factor = 1): the
#      missing topics are created with 1 partition, replication factor 1 and
#      exactly cleanup.policy=delete, retention.ms=4d, segment.ms=12h (the
#      reply topic: 5 d, 6 h).  instance-received, existing with 3
#      partitions, cleanup.policy=compact, a short retention, segment.ms 1 d
#      and max.message.bytes and min.insync.replicas of its own, gets the
#      three corrected and keeps its partitions and both other configs.
#      instance-registered, right already, is not altered.  No CreateTopics
#      ever names instance-dispatched, the request topic or the
#      authorization reply topic.
#   2. Reload with error_event_format = instance-error and
#      topic_replication_factor = 2: CreateTopics asks for 2 replicas, the
#      single broker refuses event.error.instance-error, the worker says so
#      in a WARNING naming the topic and the setting, and nothing else breaks
#      (same worker, status UP, an instance's event goes out).
#   3. Reload with topic_replication_factor = 1: event.error.instance-error
#      is created, right.
#   4. Reload with a retention of 2d: every event topic of the worker gets
#      retention.ms = 172800000, keeping its other configs; the reply topic
#      keeps its fixed 5 d; the legacy error topics are no longer the
#      worker's and are left alone.
#   Over the four rounds: AlterConfigs only where something differed (the
#   broker's request log counts them per topic).
#
# Own Kafka and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# Functions called through wait_until look unreachable; config lists are
# split into words on purpose.
# shellcheck disable=SC2317,SC2086
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

T_INSTANCE_ERROR=$PREFIX.error.instance-error
T_REPLY=fintlabs-no.flyt.reply.fint-flyt-instance-service.instance-flow-headers-for-registered-instance
T_REQUEST=fintlabs-no.flyt.request.instance-flow-headers-for-registered-instance.by.instance-id
T_AUTH_REPLY=fintlabs-no.flyt.reply.fint-flyt-instance-service.authorization
EVENT_4D="cleanup.policy=delete retention.ms=345600000 segment.ms=43200000"
EVENT_2D="cleanup.policy=delete retention.ms=172800000 segment.ms=43200000"
REPLY="cleanup.policy=delete retention.ms=432000000 segment.ms=21600000"
EXTRA_RECEIVED="max.message.bytes=2000000 min.insync.replicas=1"
EXTRA_REGISTERED="max.message.bytes=3000000"
CREATED=("$T_RETRY" "$T_DELETED" "$T_REG_ERROR" "$T_RETRY_ERROR" "$T_REPLY")

# --- helpers ---------------------------------------------------------------------------

# sorted WORD... — the words sorted, one line, space-separated.
sorted() {
	printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//'
}

# describe_all — every topic's dynamic configs ("TOPIC NAME=VALUE" lines) in
# $WORK/configs and kafka-topics --describe in $WORK/topics.
describe_all() {
	kafka_configs --describe --entity-type topics 2>>"$WORK/kafka-tools.err" |
		awk '
			/^Dynamic configs for topic / { t = $5; next }
			/^  [^ ]+=/ && t != "" {
				line = substr($0, 3)
				sub(/ sensitive=(true|false) synonyms=.*$/, "", line)
				print t, line
			}' >"$WORK/configs" || return 1
	kafka_topics --describe 2>>"$WORK/kafka-tools.err" >"$WORK/topics"
}

# configs_of TOPIC — its dynamic configs, sorted, in one line.
configs_of() {
	# shellcheck disable=SC2046
	sorted $(awk -v t="$1" '$1 == t { print $2 }' "$WORK/configs")
}

# partitions_of TOPIC, replicas_of TOPIC — from $WORK/topics.
topic_field() {
	awk -v t="$1" -v f="$2:" '
		$1 == "Topic:" && $2 == t && $3 == "TopicId:" {
			for (i = 1; i < NF; i++) if ($i == f) { print $(i + 1); exit }
		}' "$WORK/topics"
}
partitions_of() { topic_field "$1" PartitionCount; }
replicas_of() { topic_field "$1" ReplicationFactor; }

topic_missing() {
	! grep -qF "$(printf 'Topic: %s\t' "$1")" "$WORK/topics"
}

# log_count TEXT — lines of the server log holding TEXT.
log_count() {
	grep -cF -- "$1" "$CLUSTER_LOG" || true
}

# rounds_done N — the worker finished at least N rounds of provisioning
# (its last message of a round: which existing topics were right).
rounds_done() {
	[ "$(grep -cE 'existing topics? ha(s|ve) the wanted configuration already' "$CLUSTER_LOG" || true)" -ge "$1" ]
}

# requests API — the requests of that kind the broker completed for the
# worker (client.id = application_id; not the copies the broker forwarded
# to its controller), one a line.
requests() {
	grep -F '"isForwarded":false' "$KAFKA_DIR/requests.log" |
		grep -F '"clientId":"fint-flyt-instance-service"' |
		grep -F "\"requestApiKeyName\":\"$1\"" || true
}

# alters_of TOPIC — AlterConfigs requests naming TOPIC.
alters_of() {
	requests ALTER_CONFIGS | grep -cF "\"resourceName\":\"$1\"" || true
}

all_configs_are() {
	local want=$1 t
	shift
	describe_all || return 1
	for t in "$@"; do
		[ "$(configs_of "$t")" = "$want" ] || return 1
	done
}

# --- the broker, and the topics that exist before the worker ---------------------------

KAFKA_REQUEST_LOG=1 kafka_start
kafka_topics --create --topic "$T_RECEIVED" --partitions 3 --replication-factor 1 \
	--config cleanup.policy=compact --config retention.ms=1000 --config segment.ms=86400000 \
	--config max.message.bytes=2000000 --config min.insync.replicas=1 >/dev/null &
p1=$!
kafka_topics --create --topic "$T_REGISTERED" --partitions 1 --replication-factor 1 \
	--config cleanup.policy=delete --config retention.ms=345600000 --config segment.ms=43200000 \
	--config max.message.bytes=3000000 >/dev/null &
p2=$!
# consumed, created by others: here by hand
kafka_topics --create --topic "$T_DISPATCHED" --partitions 1 --replication-factor 1 >/dev/null &
p3=$!
wait "$p1" || bail "create $T_RECEIVED with 3 partitions and configs of its own"
wait "$p2" || bail "create $T_REGISTERED as the worker wants it"
wait "$p3" || bail "create $T_DISPATCHED"

# --- 0. Kafka down when the worker starts ---------------------------------------------------

kafka_kill9 || bail "kill -9 Kafka"
worker_cluster_start
require_worker
unanswered() {
	[ "$(log_count "WARNING:  flyt_instance: the Kafka brokers did not answer")" -ge 1 ]
}
if wait_until 60 unanswered; then
	pass "Kafka down: a WARNING says the brokers did not answer"
else
	fail "Kafka down: a WARNING says the brokers did not answer" "$(grep -E 'topic|WARNING' "$CLUSTER_LOG" | tail -n 10)"
fi
check_eq "and no topic was created meanwhile" 0 "$(log_count "flyt_instance: created topic ")"
kafka_restart_checked

# --- 1. the first provisioning -------------------------------------------------------------

received_changed() {
	[ "$(log_count "changed the configuration of topic $T_RECEIVED")" -ge 1 ]
}
if wait_until 60 rounds_done 1 && wait_until 30 received_changed &&
	wait_until 30 all_configs_are "$EVENT_4D" "${CREATED[@]:0:4}"; then
	pass "the worker provisioned the topics"
else
	bail "the worker provisioned the topics" "$(grep -E 'topic' "$CLUSTER_LOG" | tail -n 20)"
fi
describe_all || bail "kafka-configs / kafka-topics --describe" "$(tail -n 5 "$WORK/kafka-tools.err")"
for t in "${CREATED[@]}"; do
	want=$EVENT_4D
	[ "$t" != "$T_REPLY" ] || want=$REPLY
	check_eq "$t: exactly $want" "$want" "$(configs_of "$t")"
	check_eq "$t: 1 partition, replication factor 1" "1 1" "$(partitions_of "$t") $(replicas_of "$t")"
	check_eq "the server log says $t was created" 1 "$(log_count "created topic $t")"
done
check_eq "no other topic created" 5 "$(log_count "flyt_instance: created topic ")"
check_eq "$T_RECEIVED: the three corrected, its own two kept" \
	"$(sorted $EVENT_4D $EXTRA_RECEIVED)" "$(configs_of "$T_RECEIVED")"
check_eq "$T_RECEIVED: still 3 partitions" 3 "$(partitions_of "$T_RECEIVED")"
check "the server log says what changed on $T_RECEIVED" \
	grep -qF "cleanup.policy compact -> delete, retention.ms 1000 -> 345600000, segment.ms 86400000 -> 43200000" "$CLUSTER_LOG"
check_eq "$T_REGISTERED, right already: unchanged" \
	"$(sorted $EVENT_4D $EXTRA_REGISTERED)" "$(configs_of "$T_REGISTERED")"
check_eq "one topic reconfigured ($T_RECEIVED)" "1 1" \
	"$(log_count "changing the configuration of topic ") $(log_count "changed the configuration of topic $T_RECEIVED")"
check "the server log names $T_REGISTERED as not changed" grep -qF "Not changed: $T_REGISTERED." "$CLUSTER_LOG"
for t in "$T_REQUEST" "$T_AUTH_REPLY" "$T_INSTANCE_ERROR"; do
	check "$t does not exist" topic_missing "$t"
done
if wait_status_up 60; then
	pass "status UP"
else
	fail "status UP" "flyt_status(): $(show_status)"
fi
WPID=$(status_field "->'worker'->>'pid'")

# --- 2. instance-error, and 2 replicas on one broker -------------------------------------

sql "ALTER SYSTEM SET flyt_instance.error_event_format = 'instance-error'" >/dev/null
sql "ALTER SYSTEM SET flyt_instance.topic_replication_factor = 2" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 60 rounds_done 2; then
	pass "a reload with new settings provisions again"
else
	bail "a reload with new settings provisions again" "$(grep -E 'topic' "$CLUSTER_LOG" | tail -n 20)"
fi
check "a WARNING names $T_INSTANCE_ERROR" grep -qF "WARNING:  flyt_instance: could not create topic $T_INSTANCE_ERROR" "$CLUSTER_LOG"
check "and the replication factor setting" grep -qF "flyt_instance.topic_replication_factor is 2" "$CLUSTER_LOG"
create_with_2() {
	requests CREATE_TOPICS | grep -F "\"name\":\"$T_INSTANCE_ERROR\"" | grep -qF '"replicationFactor":2'
}
if wait_until 10 create_with_2; then
	pass "the broker got CreateTopics for it with replicationFactor 2"
else
	fail "the broker got CreateTopics for it with replicationFactor 2" "$(requests CREATE_TOPICS | tail -n 1 | cut -c 1-600)"
fi
describe_all || bail "kafka-topics --describe"
check "$T_INSTANCE_ERROR does not exist" topic_missing "$T_INSTANCE_ERROR"
check_eq "no topic reconfigured (still the one of round 1)" 1 "$(log_count "changing the configuration of topic ")"
check_eq "the same worker" "$WPID" "$(status_field "->'worker'->>'pid'")"
register_fixture >/dev/null
if wait_until 60 sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "an instance registered meanwhile: its event goes out"
else
	fail "an instance registered meanwhile: its event goes out" "flyt_status(): $(show_status)"
fi
if wait_status_up 30; then
	pass "status UP"
else
	fail "status UP" "flyt_status(): $(show_status)"
fi

# --- 3. 1 replica again ------------------------------------------------------------------

sql "ALTER SYSTEM SET flyt_instance.topic_replication_factor = 1" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 60 rounds_done 3 && wait_until 30 all_configs_are "$EVENT_4D" "$T_INSTANCE_ERROR"; then
	pass "with topic_replication_factor = 1 the worker creates $T_INSTANCE_ERROR"
else
	bail "with topic_replication_factor = 1 the worker creates $T_INSTANCE_ERROR" "$(grep -E 'topic' "$CLUSTER_LOG" | tail -n 20)"
fi
describe_all || bail "kafka-topics --describe"
check_eq "$T_INSTANCE_ERROR: exactly $EVENT_4D" "$EVENT_4D" "$(configs_of "$T_INSTANCE_ERROR")"
check_eq "$T_INSTANCE_ERROR: 1 partition, replication factor 1" "1 1" \
	"$(partitions_of "$T_INSTANCE_ERROR") $(replicas_of "$T_INSTANCE_ERROR")"
check_eq "no topic reconfigured (still the one of round 1)" 1 "$(log_count "changing the configuration of topic ")"

# --- 4. a new retention --------------------------------------------------------------------

WORKER_EVENTS=("$T_RECEIVED" "$T_REGISTERED" "$T_RETRY" "$T_DELETED" "$T_INSTANCE_ERROR")
sql "ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '2d'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 60 rounds_done 4 &&
	wait_until 30 all_configs_are "$EVENT_2D" "$T_RETRY" "$T_DELETED" "$T_INSTANCE_ERROR"; then
	pass "after a reload with 2d: retention.ms = 172800000 on the worker's event topics"
else
	fail "after a reload with 2d: retention.ms = 172800000 on the worker's event topics" "configs: $(cat "$WORK/configs")"
fi
changed_at_least() {
	[ "$(log_count "changed the configuration of topic ")" -ge "$1" ]
}
wait_until 30 changed_at_least 6 || true
describe_all || bail "kafka-configs / kafka-topics --describe"
check_eq "$T_RECEIVED: 2d, its own two kept" "$(sorted $EVENT_2D $EXTRA_RECEIVED)" "$(configs_of "$T_RECEIVED")"
check_eq "$T_RECEIVED: still 3 partitions" 3 "$(partitions_of "$T_RECEIVED")"
check_eq "$T_REGISTERED: 2d, its own kept" "$(sorted $EVENT_2D $EXTRA_REGISTERED)" "$(configs_of "$T_REGISTERED")"
check_eq "$T_REPLY keeps its fixed 5 d" "$REPLY" "$(configs_of "$T_REPLY")"
for t in "$T_REG_ERROR" "$T_RETRY_ERROR"; do
	check_eq "$t, no longer the worker's, is left alone" "$EVENT_4D" "$(configs_of "$t")"
done
check_eq "five topics reconfigured in this round" 6 "$(log_count "changed the configuration of topic ")"

# --- over all four rounds: AlterConfigs as the broker saw them ----------------------------

broker_saw_all() {
	[ "$(alters_of "$T_RECEIVED")" = 2 ] && [ "$(alters_of "$T_INSTANCE_ERROR")" = 1 ] &&
		[ "$(requests CREATE_TOPICS | wc -l)" -ge 4 ]
}
wait_until 30 broker_saw_all || true
check_eq "the broker got 2 AlterConfigs requests in all (rounds 1 and 4)" 2 "$(requests ALTER_CONFIGS | wc -l)"
check_eq "AlterConfigs per topic: $T_RECEIVED 2, the other worker event topics 1" "2 1 1 1 1" \
	"$(for t in "${WORKER_EVENTS[@]}"; do alters_of "$t"; done | tr '\n' ' ' | sed 's/ $//')"
check_eq "AlterConfigs for $T_REPLY, right in all four rounds: none" 0 "$(alters_of "$T_REPLY")"
check_eq "the broker got 4 CreateTopics requests (one a round)" 4 "$(requests CREATE_TOPICS | wc -l)"
for t in "$T_DISPATCHED" "$T_REQUEST" "$T_AUTH_REPLY"; do
	check_eq "no CreateTopics names $t" 0 "$(requests CREATE_TOPICS | grep -cF "\"name\":\"$t\"" || true)"
done
check_eq "no provisioning WARNING but the refused creation" 1 \
	"$(grep -cE 'WARNING:  flyt_instance: (could not|topic .* is not reconfigured)' "$CLUSTER_LOG" || true)"
check_eq "and the one while Kafka was down" 1 \
	"$(log_count "WARNING:  flyt_instance: the Kafka brokers did not answer")"
check_eq "the same worker throughout" "$WPID" "$(status_field "->'worker'->>'pid'")"

finish
