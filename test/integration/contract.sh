#!/usr/bin/env bash
#
# contract.sh — the original service's wire contract (lib_contract.sh)
# against the embedded broker (broker/flyt_broker).  kafka_contract.sh runs
# the same checks against a real Apache Kafka.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/integration/lib_contract.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_contract.sh"

it_setup 300
broker_start
worker_cluster_start
require_worker
expect_status_up 60
contract_checks
finish
