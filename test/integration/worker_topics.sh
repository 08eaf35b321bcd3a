#!/usr/bin/env bash
#
# worker_topics.sh — the worker's producer knows the partitions of every
# topic it sends to before the first message to it, and learns of them
# only after provisioning has created them.
#
# librdkafka looks up a topic it first hears of from a message only at its
# next scan of the topics it knows (once a second), and the message waits
# for that: against Apache Kafka the first message to each topic after
# every connect took 0.4-1.2 s to be delivered (bench/RESULTS.md).  When
# the brokers answer the latest request to create the topics, the worker
# gives its producer a handle of each topic it sends to that the answer
# says exists, and again after a reload changes which error topics those
# are; not before, since on brokers with auto.create.topics.enable the
# lookup would create them with the brokers' defaults first.  Against a
# real Kafka with no topics and auto.create.topics.enable on, librdkafka's
# own debug lines (kafka_config debug=topic, at DEBUG1 in the server log)
# show:
#
#   - with nothing queued and nothing sent, the producer learns that each
#     of instance-registered, -requested-for-retry, -deleted and the two
#     legacy error topics exists (its state goes from unknown to exists),
#     and it first hears of each after the server log said the worker
#     created it;
#   - after error_event_format = 'instance-error' and a reload, the same
#     for the instance-error topic, still with nothing sent;
#   - a retry then reaches the broker.
#
# (Fails without the handles, and with them made when the producer is:
# checked.)
#
# Own Kafka and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

kafka_start auto.create.topics.enable=true
worker_cluster_start -c "flyt_instance.kafka_config = '$KAFKA_CONFIG;debug=topic'" \
	-c "log_min_messages = debug1"
require_worker
expect_status_up

# known TOPIC — the producer has learnt that TOPIC exists (and not from a
# message: nothing is queued or sent in this suite until the end).
known() {
	grep -qF "librdkafka: STATE: [thrd:main]: Topic $1 changed state unknown -> exists" "$CLUSTER_LOG"
}
# line_of TEXT — the number of the server log's first line holding TEXT.
line_of() {
	grep -nF -- "$1" "$CLUSTER_LOG" | head -1 | cut -d: -f1
}
# check_known TOPIC WHEN
check_known() {
	local created heard
	if wait_until "$WAIT" known "$1"; then
		pass "$2, the producer knows $1"
	else
		fail "$2, the producer knows $1" \
			"$(grep -c 'librdkafka log lines were dropped' "$CLUSTER_LOG" || true) reports of dropped librdkafka lines"
	fi
	created=$(line_of "flyt_instance: created topic $1")
	heard=$(line_of "librdkafka: TOPIC: [thrd:app]: New local topic: $1")
	if [ -n "$created" ] && [ -n "$heard" ] && [ "$created" -lt "$heard" ]; then
		pass "$2, the producer heard of $1 only after the worker created it"
	else
		fail "$2, the producer heard of $1 only after the worker created it" \
			"created at line ${created:-none}, heard of at line ${heard:-none}"
	fi
}
nothing_sent() {
	check_eq "$1: nothing was queued or sent" "0|0" \
		"$(sql "SELECT count(*) FROM flyt.outbox")|$(metric_sum flyt_instance_produced_total)"
}

for t in "$T_REGISTERED" "$T_RETRY" "$T_DELETED" "$T_REG_ERROR" "$T_RETRY_ERROR"; do
	check_known "$t" "after connecting"
done
check "nor did it learn of instance-error, which legacy errors do not use" \
	bash -c "! grep -qF 'Topic $T_INSTANCE_ERROR changed state' '$CLUSTER_LOG'"
nothing_sent "after connecting"

sql "ALTER SYSTEM SET flyt_instance.error_event_format = 'instance-error'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
check_known "$T_INSTANCE_ERROR" "after error_event_format changed"
nothing_sent "after the reload"

ID=$(register_fixture)
sql "SELECT flyt_retry($ID)" >/dev/null
check "a retry then reaches the broker" wait_messages "$T_RETRY" 1

finish
