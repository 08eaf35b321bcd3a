#!/usr/bin/env bash
#
# worker_topics.sh — the worker's producer knows the partitions of every
# topic it sends to before the first message to it.
#
# librdkafka looks up a topic it first hears of from a message only at its
# next scan of the topics it knows (once a second), and the message waits
# for that: against Apache Kafka the first message to each topic after
# every connect took 0.4-1.2 s to be delivered (bench/RESULTS.md).  The
# worker gives its producer a handle of each topic it sends to when it
# connects, and again when flyt_instance.error_event_format changes which
# error topics those are.  librdkafka's own debug lines (kafka_config
# debug=topic, at DEBUG1 in the server log) show it:
#
#   - with nothing queued and nothing sent, the producer learns that each
#     of instance-registered, -requested-for-retry, -deleted and the two
#     legacy error topics exists (its state goes from unknown to exists);
#   - after error_event_format = 'instance-error' and a reload, the same
#     for the instance-error topic, still with nothing sent;
#   - a retry then reaches the broker.
#
# (Fails without the handles: checked.)
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 180

broker_start
worker_cluster_start -c "flyt_instance.kafka_config = '$KAFKA_CONFIG;debug=topic'" \
	-c "log_min_messages = debug1"
require_worker
expect_status_up

# known TOPIC — the producer has learnt that TOPIC exists (and not from a
# message: nothing is queued or sent in this suite until the end).
known() {
	grep -qF "librdkafka: STATE: [thrd:main]: Topic $1 changed state unknown -> exists" "$CLUSTER_LOG"
}
nothing_sent() {
	check_eq "$1: nothing was queued or sent" "0|0" \
		"$(sql "SELECT count(*) FROM flyt.outbox")|$(metric_sum flyt_instance_produced_total)"
}

for t in "$T_REGISTERED" "$T_RETRY" "$T_DELETED" "$T_REG_ERROR" "$T_RETRY_ERROR"; do
	if wait_until "$WAIT" known "$t"; then
		pass "after connecting, the producer knows $t"
	else
		fail "after connecting, the producer knows $t" \
			"$(grep -c 'librdkafka log lines were dropped' "$CLUSTER_LOG" || true) reports of dropped librdkafka lines"
	fi
done
check "nor did it learn of instance-error, which legacy errors do not use" \
	bash -c "! grep -qF 'Topic $T_INSTANCE_ERROR changed state' '$CLUSTER_LOG'"
nothing_sent "after connecting"

sql "ALTER SYSTEM SET flyt_instance.error_event_format = 'instance-error'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until "$WAIT" known "$T_INSTANCE_ERROR"; then
	pass "after error_event_format changed, the producer knows $T_INSTANCE_ERROR"
else
	fail "after error_event_format changed, the producer knows $T_INSTANCE_ERROR"
fi
nothing_sent "after the reload"

ID=$(register_fixture)
sql "SELECT flyt_retry($ID)" >/dev/null
check "a retry then reaches the broker" wait_messages "$T_RETRY" 1

finish
