#!/usr/bin/env bash
#
# kafka_contract.sh — the original service's wire contract (lib_contract.sh)
# against a real Apache Kafka node (script/kafka.sh); contract.sh runs the
# same checks against the embedded broker.  The consumed topics are created
# here (the worker provisions only what the original provisions, and
# instance-dispatched is not one of those).
#
# Own Kafka and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/integration/lib_contract.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_contract.sh"

it_setup 420
kafka_start
kafka_create_topics "$ORG" >>"$WORK/kafka.err" 2>&1 || bail "the flyt topics are created" "$(tail -n 20 "$WORK/kafka.err")"
kafka_topics --create --if-not-exists --topic "$T_INSTANCE_ERROR" --partitions 1 --replication-factor 1 \
	>>"$WORK/kafka.err" 2>&1 || bail "$T_INSTANCE_ERROR is created" "$(tail -n 20 "$WORK/kafka.err")"
worker_cluster_start
require_worker
expect_status_up 60
contract_checks
finish
