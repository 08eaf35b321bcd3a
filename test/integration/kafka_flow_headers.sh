#!/usr/bin/env bash
#
# kafka_flow_headers.sh — flow headers asked of fint-flyt-history-service by
# request-reply (lib_flow_headers.sh) against a real Apache Kafka node
# (script/kafka.sh); flow_headers.sh runs them against the embedded broker.
# The request topic is history-service's to create: made here.
#
# Own Kafka, cluster and stand-in; all always stopped.  Prints ok/not ok
# lines and "N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/integration/lib_flow_headers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_flow_headers.sh"

it_setup 420
kafka_start
kafka_create_topics "$ORG" >>"$WORK/kafka.err" 2>&1 || bail "the flyt topics are created" "$(tail -n 20 "$WORK/kafka.err")"
for t in "$T_REQUEST" "$T_REPLY"; do
	kafka_topics --create --if-not-exists --topic "$t" --partitions 1 --replication-factor 1 \
		>>"$WORK/kafka.err" 2>&1 || bail "$t is created" "$(tail -n 20 "$WORK/kafka.err")"
done
flow_cluster_start
require_worker
expect_status_up 60
flow_headers_checks
finish
