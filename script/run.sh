#!/usr/bin/env bash
#
# script/run.sh — what `make run` runs after building and installing: the
# embedded Kafka broker (broker/flyt_broker, librdkafka's mock cluster) and a
# throw-away cluster on 127.0.0.1 with flyt_instance preloaded, its worker
# connected to the broker, and one sample instance registered.  Prints how to use it, then waits until Ctrl-C (or
# SIGTERM/SIGHUP) and removes everything.  Does not read standard input.
#
# Environment:
#   KAFKA          mock (default): the embedded broker, up at once;
#                  real: a real Apache Kafka node (script/kafka.sh: KRaft,
#                  from Maven Central, a few seconds to start; the first
#                  time Maven downloads it).  `make run KAFKA=real`.
#   KAFKA_VERSION  with KAFKA=real: the Kafka release (default: the newest
#                  3.9.x, see script/kafka/pom.xml)
#   FLYT_FIXTURES  directory with instance-received.{headers,value}.json
#                  (default test/fixtures of the repository)
#   PG_CONFIG      pg_config of the PostgreSQL to run (default: on PATH)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# shellcheck source=script/cluster.sh
. "$repo/script/cluster.sh"

# The background `sleep` we wait on; killed on the way out (background jobs
# of a non-interactive shell ignore Ctrl-C, so it would linger otherwise).
sleep_pid=
broker_pid=
kafka_dir=
on_exit() {
	if [ -n "$sleep_pid" ]; then
		kill "$sleep_pid" 2>/dev/null || true
		sleep_pid=
	fi
	if [ -n "$broker_pid" ]; then
		kill "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
		broker_pid=
	fi
	if [ -n "${CLUSTER_DIR:-}" ]; then
		echo
		echo "Stopping the cluster and removing $CLUSTER_DIR"
	fi
	if [ -n "$kafka_dir" ]; then
		# The cluster first, so that the worker leaves its consumer group
		# while the broker still answers.
		cluster_destroy
		echo "Stopping Kafka and removing $kafka_dir"
		kafka_down
		rm -rf "$kafka_dir"
		kafka_dir=
	fi
}
cluster_trap on_exit

# --- sample messages ---------------------------------------------------------
fixtures=${FLYT_FIXTURES:-$repo/test/fixtures}
headers_file=$fixtures/instance-received.headers.json
instance_file=$fixtures/instance-received.value.json
for f in "$headers_file" "$instance_file"; do
	if [ ! -f "$f" ]; then
		echo "run: sample message $f not found" >&2
		exit 1
	fi
done

# --- broker ------------------------------------------------------------------
kafka=${KAFKA:-mock}
bootstrap=
case $kafka in
mock | embedded)
	# The broker runs until its standard input closes: a coprocess keeps
	# that pipe open for as long as this script runs.
	echo "Starting the embedded Kafka broker..."
	coproc BROKER { exec "$repo/broker/flyt_broker" --topics-for fintlabs.no 2>/dev/null; }
	# shellcheck disable=SC2153  # BROKER_PID: set by coproc
	broker_pid=$BROKER_PID
	if read -r -t 30 line <&"${BROKER[0]}"; then
		bootstrap=${line#bootstrap=}
	fi
	if [ -z "$bootstrap" ]; then
		echo "run: the embedded broker did not start" >&2
		exit 1
	fi
	broker_desc="$bootstrap (librdkafka's mock cluster, in memory)"
	;;
real)
	# shellcheck source=script/kafka.sh
	. "$repo/script/kafka.sh"
	echo "Starting Apache Kafka (script/kafka.sh)..."
	kafka_dir=$(mktemp -d "${TMPDIR:-/tmp}/flyt_kafka.XXXXXX")
	kafka_up "$kafka_dir"
	# The topics the mock has from the start; the worker provisions its own
	# (creates the missing ones, corrects cleanup.policy, retention.ms and
	# segment.ms on the others).
	kafka_create_topics fintlabs.no
	bootstrap=$KAFKA_BOOTSTRAP
	broker_desc="$bootstrap (Apache Kafka $KAFKA_RUNNING_VERSION, up in ${KAFKA_START_SECONDS}s)
  Kafka log:       $KAFKA_LOG"
	;;
*)
	echo "run: KAFKA must be mock (the default) or real, not '$kafka'" >&2
	exit 2
	;;
esac

# --- cluster -----------------------------------------------------------------
echo "Starting a throw-away PostgreSQL cluster..."
cluster_create -l 127.0.0.1 \
	-c "shared_preload_libraries = 'flyt_instance'" \
	-c "flyt_instance.org_id = 'fintlabs.no'" \
	-c "flyt_instance.kafka_bootstrap_servers = '$bootstrap'" \
	-c "flyt_instance.kafka_config = 'session.timeout.ms=6000;heartbeat.interval.ms=500'" \
	-c "flyt_instance.topic_replication_factor = 1"
cluster_start
cluster_env

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE EXTENSION IF NOT EXISTS flyt_instance'

# psql interpolates :'var' only in script input, not in -c, hence the
# here-document.  :'var' quotes the JSON as a literal.
instance_id=$(
	psql -X -q -At -v ON_ERROR_STOP=1 -d postgres \
		-v headers="$(cat "$headers_file")" \
		-v instance="$(cat "$instance_file")" <<'SQL'
SELECT flyt_register_instance(:'headers'::jsonb, :'instance'::jsonb);
SQL
)

cat <<EOF

flyt_instance is running.

  data directory:  $CLUSTER_DATA
  server log:      $CLUSTER_LOG
  Kafka broker:    $broker_desc
  sample instance: id $instance_id, from $fixtures

Connect with:

  psql -h 127.0.0.1 -p $CLUSTER_PORT -U postgres postgres

Try:

  SELECT flyt_instance($instance_id);
  SELECT flyt_retry($instance_id);
  SELECT * FROM flyt_retry_batch(ARRAY[$instance_id,2]);
  SELECT * FROM flyt_instance_history($instance_id);
  SELECT jsonb_pretty(flyt_status());
  SELECT flyt_metrics();

Watch what the worker produces (one command per topic):

  kcat -C -b $bootstrap -o beginning -f '%t key=%k %h\\n%s\\n\\n' \\
       -t fintlabs-no.flyt.event.instance-registered
  kcat -C -b $bootstrap -o beginning -f '%t key=%k %h\\n%s\\n\\n' \\
       -t fintlabs-no.flyt.event.instance-requested-for-retry

Feed it an instance, as the Flyt services upstream would:

  kcat -P -b $bootstrap -t fintlabs-no.flyt.event.instance-received \\
       -H "flyt.instance-flow-headers=\$(cat $headers_file)" $instance_file

and dispatch one (deletes it and produces instance-deleted):

  kcat -P -b $bootstrap -t fintlabs-no.flyt.event.instance-dispatched \\
       -H "flyt.instance-flow-headers={\\"sourceApplicationId\\":2,\\"correlationId\\":\\"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11\\",\\"instanceId\\":$instance_id}" $instance_file

EOF
if [ "$kafka" = real ]; then
	cat <<EOF

Kafka's own admin tools work against it, e.g.:

  script/kafka.sh topics $kafka_dir --describe
  script/kafka.sh configs $kafka_dir --describe --entity-type topics \\
       --entity-name fintlabs-no.flyt.event.instance-registered
  script/kafka.sh groups $kafka_dir --describe --group fint-flyt-instance-service
EOF
fi
cat <<EOF

Press Ctrl-C to stop the cluster and remove it.
EOF

# Wait for a signal; the trap stops the cluster and exits.  `wait` returns
# as soon as a trapped signal arrives, unlike a foreground sleep.
while :; do
	sleep 3600 &
	sleep_pid=$!
	wait "$sleep_pid" || true
	sleep_pid=
done
