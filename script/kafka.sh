#!/usr/bin/env bash
#
# script/kafka.sh — a real Apache Kafka for the tests, `make bench` and
# `make run KAFKA=real`: one combined broker+controller node (KRaft) on
# 127.0.0.1, assembled from Maven Central with script/kafka/pom.xml.  No
# download from anywhere else, no jar in the repository.
#
# As a command:
#
#   script/kafka.sh up DIR [name=value]...   start a node whose files live in
#                                DIR (created; must not hold a node yet),
#                                extra server.properties lines last; prints
#                                KAFKA_BOOTSTRAP=127.0.0.1:PORT and leaves it
#                                running
#   script/kafka.sh down DIR     stop the node of DIR (TERM, KILL after
#                                KAFKA_STOP_TIMEOUT s); fine when none runs
#   script/kafka.sh topics|configs|groups DIR ARGS...
#                                kafka-topics, kafka-configs or
#                                kafka-consumer-groups against the node of DIR
#   script/kafka.sh classpath    resolve the classpath; print its file
#   script/kafka.sh fetch        the same, silently (CI pre-fetches with it)
#
# As a library (tests; the caller's traps must call kafka_down):
#
#   . "$repo/script/kafka.sh"
#   kafka_up DIR [name=value]...  start; sets KAFKA_BOOTSTRAP (exported)
#   kafka_create_topics ORG [PARTITIONS [CONTEXT]]   the flyt topic set
#   kafka_topics --describe --topic T              (org.apache.kafka.tools.TopicCommand)
#   kafka_configs --describe --entity-type topics --entity-name T
#   kafka_groups --describe --group G              (ConsumerGroupCommand)
#   kafka_admin CLASS ARGS...     any admin tool class, --bootstrap-server added
#   kafka_topic_partitions TOPIC  its partition count
#   kafka_topic_config TOPIC NAME the topic's own (dynamic) value of NAME
#   kafka_group_offsets GROUP     TOPIC PARTITION CURRENT LOG-END LAG lines
#   kafka_flyt_topics ORG [CONTEXT]                the flyt topic names
#   kafka_kill9                   kill -9 the node (it_teardown still works)
#   kafka_restart                 start it again: same ports, same data
#   kafka_down                    stop; idempotent, never fails, trap-safe
#   kafka_attach DIR              adopt a node another process started
#
# Variables the library sets:
#   KAFKA_BOOTSTRAP        127.0.0.1:PORT (exported)
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT   the two listeners
#   KAFKA_DIR              DIR
#   KAFKA_LOG              DIR/server.log, the broker's log (log4j)
#   KAFKA_PID              the JVM's pid while it runs, else empty
#   KAFKA_RUNNING_VERSION  the Kafka release that runs
#   KAFKA_START_SECONDS    seconds from kafka_up (or kafka_restart) until
#                          `kcat -L` answered, e.g. 6.4
#
# Files in DIR: server.properties, log4j*.properties, data/ (log.dirs, the
# KRaft metadata log too), server.log, requests.log (KAFKA_REQUEST_LOG),
# kafka.out (the JVM's own output),
# format.log, kafka.pid, kafka.env (what kafka_attach reads).
#
# Environment:
#   KAFKA_VERSION        Kafka release (default: kafka.version in the pom,
#                        the newest 3.9.x); 4.x runs with log4j2
#   KAFKA_CACHE_DIR      where resolved classpaths are kept, one file per
#                        release (default ~/.m2/flyt-kafka)
#   KAFKA_HEAP_OPTS      the broker's heap (default -Xms128m -Xmx512m)
#   KAFKA_JAVA_OPTS      more JVM options for the broker
#   KAFKA_START_TIMEOUT  seconds to wait for `kcat -L` (default 60)
#   KAFKA_STOP_TIMEOUT   seconds a TERM may take before KILL (default 30)
#   KAFKA_ADMIN_TIMEOUT  seconds one admin tool may run (default 120)
#   KAFKA_REQUEST_LOG=1  log every request the node completes, with its body
#                        (kafka.request.logger at DEBUG), to DIR/requests.log:
#                        lets a test count e.g. the AlterConfigs a client sent
#
# Needs java (17), kcat, and mvn when the classpath is not cached yet.

# Functions run through traps and by name look unreachable to shellcheck.
# shellcheck disable=SC2317

KAFKA_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_POM=$KAFKA_SCRIPT_DIR/kafka/pom.xml
# The plugin that resolves the classpath, pinned: Maven 3.8's default (2.8)
# is ancient, and a pinned version resolves offline once cached.
KAFKA_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-}
KAFKA_PORT=
KAFKA_CONTROLLER_PORT=
KAFKA_DIR=
KAFKA_LOG=
KAFKA_PID=
KAFKA_RUNNING_VERSION=
KAFKA_START_SECONDS=
KAFKA_CP_FILE=
KAFKA_CDS_DUMP=
KAFKA_LOGGING=
KAFKA_TOPICS_CLASS=
KAFKA_CONFIGS_CLASS=
KAFKA_GROUPS_CLASS=

# --- internal helpers --------------------------------------------------------

_kafka_say() {
	printf 'kafka: %s\n' "$*" >&2
}

# Seconds since the epoch with a fraction, for start-time figures.
_kafka_now() {
	date +%s.%N
}

# _kafka_elapsed START — seconds since START (from _kafka_now), one decimal.
_kafka_elapsed() {
	awk -v a="$1" -v b="$(_kafka_now)" 'BEGIN { printf "%.1f\n", b - a }'
}

# The release to run: $KAFKA_VERSION, else the pom's kafka.version.
_kafka_version() {
	if [ -n "${KAFKA_VERSION:-}" ]; then
		printf '%s\n' "$KAFKA_VERSION"
		return 0
	fi
	local v
	v=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$KAFKA_POM" | head -n 1)
	if [ -z "$v" ]; then
		_kafka_say "no <kafka.version> in $KAFKA_POM"
		return 1
	fi
	printf '%s\n' "$v"
}

# _kafka_logging VERSION — the logging binding of that release line.
_kafka_logging() {
	case $1 in
	[0-3].*) echo reload4j ;;
	*) echo log4j2 ;;
	esac
}

# _kafka_cp_valid FILE — FILE holds a classpath whose every jar exists.
_kafka_cp_valid() {
	local file=$1 jar
	local -a jars
	[ -s "$file" ] || return 1
	IFS=: read -r -a jars <"$file" || true
	[ "${#jars[@]}" -gt 0 ] || return 1
	for jar in "${jars[@]}"; do
		[ -f "$jar" ] || return 1
	done
	return 0
}

# _kafka_resolve VERSION — print the path of a file holding the runtime
# classpath of VERSION, resolving it with Maven unless cached.  The cache key
# is the release plus a checksum of the pom, so a changed pom re-resolves.
# Maven runs offline first (fast, and works without a network once ~/.m2
# has everything), then online.
_kafka_resolve() {
	local version=$1 logging sum cache file tmp log rc
	logging=$(_kafka_logging "$version")
	sum=$(cksum <"$KAFKA_POM" | cut -d ' ' -f 1)
	cache=${KAFKA_CACHE_DIR:-$HOME/.m2/flyt-kafka}
	file=$cache/classpath-$version-$logging-$sum.txt
	if _kafka_cp_valid "$file"; then
		printf '%s\n' "$file"
		return 0
	fi
	if ! command -v mvn >/dev/null 2>&1; then
		_kafka_say "mvn is not installed (Debian: apt-get install -y maven)"
		return 1
	fi
	mkdir -p "$cache" || return 1
	tmp=$(mktemp "$cache/classpath.XXXXXX") || return 1
	log=$cache/mvn-$version.log
	local -a args=(-B -q -f "$KAFKA_POM" "-Dkafka.version=$version"
		"-Dkafka.logging=$logging" "$KAFKA_DEPENDENCY_PLUGIN:build-classpath"
		"-Dmdep.outputFile=$tmp" -Dmdep.includeScope=runtime)
	rc=0
	mvn -o "${args[@]}" >"$log" 2>&1 </dev/null || rc=$?
	if [ "$rc" -ne 0 ] || ! _kafka_cp_valid "$tmp"; then
		_kafka_say "resolving Kafka $version with Maven (the first time downloads about 50 MB)"
		rc=0
		mvn "${args[@]}" >"$log" 2>&1 </dev/null || rc=$?
	fi
	if [ "$rc" -ne 0 ] || ! _kafka_cp_valid "$tmp"; then
		_kafka_say "Maven could not resolve Kafka $version; the end of $log:"
		tail -n 30 "$log" >&2
		rm -f "$tmp"
		return 1
	fi
	# Class archives of an earlier resolution do not fit the new jars.
	rm -f "${file%.txt}".*.jsa
	mv -f "$tmp" "$file" || return 1
	printf '%s\n' "$file"
}

# _kafka_has_class CLASS — some Kafka jar of the classpath holds CLASS
# (zip entry names are stored uncompressed, so grep finds them).
_kafka_has_class() {
	local entry=${1//.//}.class jar
	local -a jars
	IFS=: read -r -a jars <"$KAFKA_CP_FILE" || true
	for jar in "${jars[@]}"; do
		case ${jar##*/} in
		kafka*) LC_ALL=C grep -qaF "$entry" "$jar" && return 0 ;;
		esac
	done
	return 1
}

# _kafka_first_class CLASS... — print the first CLASS the classpath has.
_kafka_first_class() {
	local c
	for c in "$@"; do
		if _kafka_has_class "$c"; then
			printf '%s\n' "$c"
			return 0
		fi
	done
	_kafka_say "none of $* is in Kafka $KAFKA_RUNNING_VERSION"
	return 1
}

# _kafka_prepare — resolve the classpath of the release to run and find
# the admin tool classes in it.
_kafka_prepare() {
	local version
	version=$(_kafka_version) || return 1
	if ! command -v java >/dev/null 2>&1; then
		_kafka_say "java is not installed (Debian: apt-get install -y default-jre-headless)"
		return 1
	fi
	KAFKA_CP_FILE=$(_kafka_resolve "$version") || return 1
	KAFKA_RUNNING_VERSION=$version
	KAFKA_LOGGING=$(_kafka_logging "$version")
	_kafka_find_tools
}

_kafka_find_tools() {
	KAFKA_TOPICS_CLASS=$(_kafka_first_class org.apache.kafka.tools.TopicCommand \
		kafka.admin.TopicCommand) || return 1
	KAFKA_CONFIGS_CLASS=$(_kafka_first_class org.apache.kafka.tools.ConfigCommand \
		kafka.admin.ConfigCommand) || return 1
	KAFKA_GROUPS_CLASS=$(_kafka_first_class \
		org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
		kafka.admin.ConsumerGroupCommand) || return 1
}

# True when nothing listens on TCP port $1 of the loopback interface.
_kafka_port_free() {
	if command -v ss >/dev/null 2>&1; then
		[ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
	else
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 1
		fi
		return 0
	fi
}

# A free port other than $1, among the 5000 just below the kernel's
# ephemeral range (Linux's default range starts at 32768): while the node is
# down for a restart, no client connection and no program binding port 0
# can take its ports.  Where that range starts too low: 50000-54999
# (script/cluster.sh takes 55000-59999).
_kafka_pick_port() {
	local i port low=32768 base=50000
	read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
	if [ "$low" -gt 6024 ]; then
		base=$((low - 5000))
	fi
	for ((i = 0; i < 100; i++)); do
		port=$((base + RANDOM % 5000))
		if [ "$port" != "${1:-}" ] && _kafka_port_free "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	_kafka_say "no free TCP port found between $base and $((base + 4999))"
	return 1
}

# A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
# `kafka-storage random-uuid` prints, without starting a JVM).  Never with a
# leading dash, which the tools would take for an option.
_kafka_cluster_id() {
	local id=-
	while [ "${id:0:1}" = - ]; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
	done
	printf '%s\n' "$id"
}

# _kafka_is_ours PID — PID is the kafka.Kafka JVM of $KAFKA_DIR (and no
# other process that reused the number).
_kafka_is_ours() {
	local cmd
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *" kafka.Kafka $KAFKA_DIR/server.properties"* ]]
}

# _kafka_alive PID — PID runs (a zombie counts as gone).
_kafka_alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "$state" != Z ]
}

# _kafka_write_config — server.properties and the logging configurations.
_kafka_write_config() {
	local extra
	{
		printf '# written by script/kafka.sh: one broker+controller node on loopback\n'
		printf 'process.roles=broker,controller\n'
		printf 'node.id=1\n'
		printf 'controller.quorum.voters=1@127.0.0.1:%s\n' "$KAFKA_CONTROLLER_PORT"
		printf 'listeners=PLAINTEXT://127.0.0.1:%s,CONTROLLER://127.0.0.1:%s\n' \
			"$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
		printf 'advertised.listeners=PLAINTEXT://127.0.0.1:%s\n' "$KAFKA_PORT"
		printf 'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n'
		printf 'controller.listener.names=CONTROLLER\n'
		printf 'inter.broker.listener.name=PLAINTEXT\n'
		printf 'log.dirs=%s/data\n' "$KAFKA_DIR"
		# One node: every internal topic with one replica, few partitions.
		printf 'num.partitions=1\n'
		printf 'offsets.topic.replication.factor=1\n'
		printf 'offsets.topic.num.partitions=1\n'
		printf 'transaction.state.log.replication.factor=1\n'
		printf 'transaction.state.log.min.isr=1\n'
		printf 'transaction.state.log.num.partitions=1\n'
		printf 'share.coordinator.state.topic.replication.factor=1\n'
		printf 'share.coordinator.state.topic.min.isr=1\n'
		# After a kill -9 the controller refuses the restarted broker until
		# the old incarnation's session expired (9 s by default).
		printf 'broker.heartbeat.interval.ms=500\n'
		printf 'broker.session.timeout.ms=3000\n'
		# A group forms at once instead of waiting 3 s for more members.
		printf 'group.initial.rebalance.delay.ms=0\n'
		# The worker provisions the topics it produces; a producer must not
		# create one by accident (with the wrong settings).
		printf 'auto.create.topics.enable=false\n'
		# Small and few: 2 cores, short-lived data.
		printf 'num.network.threads=2\n'
		printf 'num.io.threads=4\n'
		printf 'num.recovery.threads.per.data.dir=1\n'
		printf 'log.cleaner.dedupe.buffer.size=8388608\n'
		printf 'log.cleaner.threads=1\n'
		if [ "$#" -gt 0 ]; then
			printf '# caller settings\n'
			for extra in "$@"; do
				printf '%s\n' "$extra"
			done
		fi
	} >"$KAFKA_DIR/server.properties" || return 1

	if [ "$KAFKA_LOGGING" = reload4j ]; then
		cat >"$KAFKA_DIR/log4j.properties" <<EOF || return 1
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$KAFKA_LOG
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
EOF
		cat >"$KAFKA_DIR/tools-log4j.properties" <<'EOF' || return 1
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
	else
		cat >"$KAFKA_DIR/log4j2.properties" <<EOF || return 1
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $KAFKA_LOG
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
		cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF' || return 1
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
EOF
	fi
	[ "${KAFKA_REQUEST_LOG:-0}" = 1 ] || return 0
	# The request logger, DEBUG, to a file of its own (the later lines win).
	if [ "$KAFKA_LOGGING" = reload4j ]; then
		cat >>"$KAFKA_DIR/log4j.properties" <<EOF || return 1
log4j.logger.kafka.request.logger=DEBUG, requests
log4j.additivity.kafka.request.logger=false
log4j.appender.requests=org.apache.log4j.FileAppender
log4j.appender.requests.File=$KAFKA_DIR/requests.log
log4j.appender.requests.Append=true
log4j.appender.requests.layout=org.apache.log4j.PatternLayout
log4j.appender.requests.layout.ConversionPattern=[%d] %m%n
EOF
	else
		cat >>"$KAFKA_DIR/log4j2.properties" <<EOF || return 1
appender.requests.type = File
appender.requests.name = requests
appender.requests.fileName = $KAFKA_DIR/requests.log
appender.requests.append = true
appender.requests.layout.type = PatternLayout
appender.requests.layout.pattern = [%d] %m%n
logger.request.level = debug
logger.request.additivity = false
logger.request.appenderRef.requests.ref = requests
EOF
	fi
}

# _kafka_log_opts CONFIG — JVM options that point either binding at
# $KAFKA_DIR/CONFIG (tools-log4j or log4j).
_kafka_log_opts() {
	if [ "$KAFKA_LOGGING" = reload4j ]; then
		printf '%s\n' "-Dlog4j.configuration=file:$KAFKA_DIR/$1.properties"
	else
		printf '%s\n' "-Dlog4j2.configurationFile=$KAFKA_DIR/${1/log4j/log4j2}.properties"
	fi
}

# _kafka_tool CLASS ARGS... — a short-lived JVM on the classpath: quick to
# start (C1 only, serial GC, small heap), logging WARN to stderr.
_kafka_tool() {
	local class=$1 cp dump rc=0
	shift
	cp=$(cat "$KAFKA_CP_FILE") || return 1
	_kafka_cds tools
	dump=$_KAFKA_CDS_DUMP
	timeout -k 5 "${KAFKA_ADMIN_TIMEOUT:-120}" java -Xmx256m -XX:+UseSerialGC \
		-XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
		"-XX:ErrorFile=${TMPDIR:-/tmp}/flyt_kafka_hs_err_%p.log" \
		"${_KAFKA_CDS_OPTS[@]}" "$(_kafka_log_opts tools-log4j)" \
		-cp "$cp" "$class" "$@" </dev/null || rc=$?
	if [ -n "$dump" ]; then
		# 124 and up: timed out, killed or crashed, maybe while dumping.
		if [ "$rc" -lt 124 ]; then
			_kafka_cds_keep "$dump" tools
		else
			rm -f "$dump"
		fi
	fi
	return "$rc"
}

# Class data sharing: each JVM maps the classes it loads from an archive
# made by an earlier run on the same classpath (Java 17 dynamic AppCDS),
# which halves an admin tool's run (1.3 s to 0.6 s) and speeds the broker's
# start.  The first run of each kind writes the archive when it exits; it
# is kept (next to the classpath file) only when that run ended by itself
# and a JVM starts with it: a truncated archive crashes the JVM.
# KAFKA_CDS=0 turns it off.

# _kafka_cds KIND — set _KAFKA_CDS_OPTS, the JVM options for a JVM of KIND
# (tools or broker), and _KAFKA_CDS_DUMP, the file this run writes an
# archive to when there is none yet (else empty).
_kafka_cds() {
	local jsa=${KAFKA_CP_FILE%.txt}.$1.jsa
	_KAFKA_CDS_OPTS=()
	_KAFKA_CDS_DUMP=
	[ "${KAFKA_CDS:-1}" = 1 ] || return 0
	# A stale archive (a jar changed) is ignored; say nothing about it.
	_KAFKA_CDS_OPTS=('-Xlog:cds*=off')
	if [ -s "$jsa" ]; then
		_KAFKA_CDS_OPTS+=("-XX:SharedArchiveFile=$jsa")
	else
		_KAFKA_CDS_DUMP=$jsa.$$.$RANDOM
		_KAFKA_CDS_OPTS+=("-XX:ArchiveClassesAtExit=$_KAFKA_CDS_DUMP")
	fi
}

# _kafka_cds_keep FILE KIND — install the archive FILE that a JVM of KIND
# wrote, if a JVM starts with it; remove it otherwise.
_kafka_cds_keep() {
	local file=$1 jsa=${KAFKA_CP_FILE%.txt}.$2.jsa cp
	if [ -s "$file" ] && cp=$(cat "$KAFKA_CP_FILE" 2>/dev/null) &&
		timeout 30 java -Xshare:on -Xlog:disable "-XX:SharedArchiveFile=$file" \
			"-XX:ErrorFile=${TMPDIR:-/tmp}/flyt_kafka_hs_err_%p.log" \
			-cp "$cp" -version >/dev/null 2>&1; then
		mv -f "$file" "$jsa" 2>/dev/null || rm -f "$file"
	else
		rm -f "$file"
	fi
	return 0
}

# _kafka_save_env — what kafka_attach and `script/kafka.sh down` read.
_kafka_save_env() {
	{
		printf 'KAFKA_BOOTSTRAP=%s\n' "$KAFKA_BOOTSTRAP"
		printf 'KAFKA_PORT=%s\n' "$KAFKA_PORT"
		printf 'KAFKA_CONTROLLER_PORT=%s\n' "$KAFKA_CONTROLLER_PORT"
		printf 'KAFKA_RUNNING_VERSION=%s\n' "$KAFKA_RUNNING_VERSION"
		printf 'KAFKA_CP_FILE=%s\n' "$KAFKA_CP_FILE"
		printf 'KAFKA_CDS_DUMP=%s\n' "$KAFKA_CDS_DUMP"
	} >"$KAFKA_DIR/kafka.env"
}

# _kafka_start_jvm — start kafka.Kafka in the background on the existing
# configuration and data; sets KAFKA_PID and writes the pid file.
_kafka_start_jvm() {
	local cp
	local -a heap opts
	cp=$(cat "$KAFKA_CP_FILE") || return 1
	read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
	read -r -a opts <<<"${KAFKA_JAVA_OPTS:-}"
	_kafka_cds broker
	KAFKA_CDS_DUMP=$_KAFKA_CDS_DUMP
	# Standard input from /dev/null and output to a file: the JVM must not
	# hold the caller's terminal or pipes open.  A background job of a
	# script ignores Ctrl-C; kafka_down stops it.
	java "${heap[@]}" -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
		-Djava.awt.headless=true "-Dkafka.logs.dir=$KAFKA_DIR" \
		"-XX:ErrorFile=$KAFKA_DIR/hs_err_%p.log" "${_KAFKA_CDS_OPTS[@]}" \
		"$(_kafka_log_opts log4j)" "${opts[@]}" \
		-cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
		</dev/null >>"$KAFKA_DIR/kafka.out" 2>&1 &
	KAFKA_PID=$!
	printf '%s\n' "$KAFKA_PID" >"$KAFKA_DIR/kafka.pid"
	_kafka_save_env
}

# _kafka_answers — kcat gets metadata from the broker, which lists itself.
_kafka_answers() {
	local out
	out=$(timeout 10 kcat -L -b "$KAFKA_BOOTSTRAP" -m 3 2>/dev/null) || return 1
	[[ $out == *"broker 1 at 127.0.0.1:$KAFKA_PORT"* ]]
}

# _kafka_wait_ready START — until kcat answers (true), the JVM dies or
# KAFKA_START_TIMEOUT passes (false, with the end of the logs).
_kafka_wait_ready() {
	local start=$1 limit=${KAFKA_START_TIMEOUT:-60}
	local end=$((SECONDS + limit))
	while :; do
		if ! _kafka_alive "$KAFKA_PID"; then
			wait "$KAFKA_PID" 2>/dev/null || true
			KAFKA_PID=
			rm -f "$KAFKA_DIR/kafka.pid"
			if [ -n "$KAFKA_CDS_DUMP" ]; then
				rm -f "$KAFKA_CDS_DUMP"
				KAFKA_CDS_DUMP=
			fi
			return 2
		fi
		if _kafka_answers; then
			KAFKA_START_SECONDS=$(_kafka_elapsed "$start")
			return 0
		fi
		if [ "$SECONDS" -ge "$end" ]; then
			_kafka_say "no answer from $KAFKA_BOOTSTRAP within ${limit}s"
			return 1
		fi
		sleep 0.2
	done
}

# _kafka_show_logs — the end of the JVM's output and of the broker log.
_kafka_show_logs() {
	local f
	for f in "$KAFKA_DIR/kafka.out" "$KAFKA_LOG"; do
		if [ -s "$f" ]; then
			printf -- '----- last 30 lines of %s -----\n' "$f" >&2
			tail -n 30 "$f" >&2
			printf -- '----- end of %s -----\n' "$f" >&2
		fi
	done
}

# _kafka_port_clash — the last start failed because a port was taken.
_kafka_port_clash() {
	grep -qs 'Address already in use' "$KAFKA_DIR/kafka.out" "$KAFKA_LOG"
}

# --- public functions --------------------------------------------------------

# kafka_up DIR [name=value]... — format a fresh node in DIR and start it;
# extra server.properties lines override the defaults.  Sets the KAFKA_*
# variables above.  On failure nothing is left running.
kafka_up() {
	local dir=${1:-} start attempt rc id
	if [ -z "$dir" ]; then
		_kafka_say "usage: kafka_up DIR [name=value]..."
		return 2
	fi
	shift
	if [ -n "$KAFKA_PID" ] && _kafka_alive "$KAFKA_PID"; then
		_kafka_say "this shell already runs a node in $KAFKA_DIR"
		return 1
	fi
	start=$(_kafka_now)
	mkdir -p "$dir" || return 1
	KAFKA_DIR=$(cd "$dir" && pwd -P) || return 1
	if [ -e "$KAFKA_DIR/data" ]; then
		_kafka_say "$KAFKA_DIR already holds a node (data/); use kafka_restart or a fresh directory"
		return 1
	fi
	command -v kcat >/dev/null 2>&1 || {
		_kafka_say "kcat is not installed (Debian: apt-get install -y kcat)"
		return 1
	}
	_kafka_prepare || return 1
	KAFKA_LOG=$KAFKA_DIR/server.log
	id=$(_kafka_cluster_id) || return 1

	for attempt in 1 2 3; do
		KAFKA_PORT=$(_kafka_pick_port) || return 1
		KAFKA_CONTROLLER_PORT=$(_kafka_pick_port "$KAFKA_PORT") || return 1
		KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
		export KAFKA_BOOTSTRAP
		rm -rf "$KAFKA_DIR/data"
		_kafka_write_config "$@" || return 1
		if ! _kafka_tool kafka.tools.StorageTool format -t "$id" \
			-c "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/format.log" 2>&1; then
			_kafka_say "formatting $KAFKA_DIR/data failed:"
			cat "$KAFKA_DIR/format.log" >&2
			return 1
		fi
		_kafka_start_jvm || return 1
		rc=0
		_kafka_wait_ready "$start" || rc=$?
		if [ "$rc" -eq 0 ]; then
			return 0
		fi
		if [ "$rc" -eq 2 ] && [ "$attempt" -lt 3 ] && _kafka_port_clash; then
			_kafka_say "a port was taken meanwhile, retrying on others"
			continue
		fi
		_kafka_say "Kafka $KAFKA_RUNNING_VERSION did not start in $KAFKA_DIR"
		_kafka_show_logs
		kafka_down
		return 1
	done
	return 1
}

# kafka_down — stop the node: TERM (a controlled shutdown), KILL after
# KAFKA_STOP_TIMEOUT seconds.  Only ever signals the JVM of $KAFKA_DIR.
# Idempotent and safe in traps: never fails.
kafka_down() {
	local pid=$KAFKA_PID i limit=${KAFKA_STOP_TIMEOUT:-30} killed=0
	if [ -z "$pid" ] && [ -n "$KAFKA_DIR" ] && [ -r "$KAFKA_DIR/kafka.pid" ]; then
		pid=$(cat "$KAFKA_DIR/kafka.pid" 2>/dev/null) || pid=
	fi
	KAFKA_PID=
	if [ -n "$pid" ] && _kafka_is_ours "$pid" && _kafka_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < limit * 5; i++)); do
			_kafka_alive "$pid" || break
			sleep 0.2
		done
		if _kafka_alive "$pid"; then
			_kafka_say "Kafka $pid did not stop within ${limit}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
			killed=1
			for ((i = 0; i < 50; i++)); do
				_kafka_alive "$pid" || break
				sleep 0.1
			done
		fi
	fi
	# Reap it when it is our child (no-op otherwise).
	[ -z "$pid" ] || wait "$pid" 2>/dev/null || true
	[ -z "$KAFKA_DIR" ] || rm -f "$KAFKA_DIR/kafka.pid" 2>/dev/null || true
	# The class archive a first run wrote on its way out.
	if [ -n "$KAFKA_CDS_DUMP" ]; then
		if [ "$killed" = 0 ] && [ -n "$KAFKA_CP_FILE" ]; then
			_kafka_cds_keep "$KAFKA_CDS_DUMP" broker
		else
			rm -f "$KAFKA_CDS_DUMP" 2>/dev/null || true
		fi
		KAFKA_CDS_DUMP=
	fi
	return 0
}

# kafka_kill9 — kill -9 the node, the way a crash would (no controlled
# shutdown, log recovery on the next start); returns once it is gone.
kafka_kill9() {
	local pid=$KAFKA_PID i
	if [ -z "$pid" ] || ! _kafka_is_ours "$pid"; then
		_kafka_say "kafka_kill9: no node of ours runs"
		return 1
	fi
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		_kafka_alive "$pid" || break
		sleep 0.1
	done
	wait "$pid" 2>/dev/null || true
	KAFKA_PID=
	rm -f "$KAFKA_DIR/kafka.pid"
	if [ -n "$KAFKA_CDS_DUMP" ]; then
		rm -f "$KAFKA_CDS_DUMP"
		KAFKA_CDS_DUMP=
	fi
	return 0
}

# kafka_restart — start the node of $KAFKA_DIR again (stopping it first if
# it runs): same ports, same data.  Sets KAFKA_START_SECONDS.
kafka_restart() {
	local start rc=0
	if [ -z "$KAFKA_DIR" ] || [ ! -f "$KAFKA_DIR/server.properties" ]; then
		_kafka_say "kafka_restart: no node to restart (kafka_up first)"
		return 1
	fi
	kafka_down
	start=$(_kafka_now)
	[ -n "$KAFKA_CP_FILE" ] || _kafka_prepare || return 1
	_kafka_start_jvm || return 1
	_kafka_wait_ready "$start" || rc=$?
	if [ "$rc" -ne 0 ]; then
		_kafka_say "Kafka did not start again in $KAFKA_DIR"
		_kafka_show_logs
		kafka_down
		return 1
	fi
	return 0
}

# kafka_attach DIR — use the node another process started in DIR (sets the
# same variables as kafka_up; KAFKA_PID is empty when it is not running).
kafka_attach() {
	local dir=${1:-} pid
	if [ -z "$dir" ] || [ ! -r "$dir/kafka.env" ]; then
		_kafka_say "kafka_attach: no node in '$dir'"
		return 1
	fi
	KAFKA_DIR=$(cd "$dir" && pwd -P) || return 1
	KAFKA_LOG=$KAFKA_DIR/server.log
	KAFKA_BOOTSTRAP=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$KAFKA_DIR/kafka.env")
	KAFKA_PORT=$(sed -n 's/^KAFKA_PORT=//p' "$KAFKA_DIR/kafka.env")
	KAFKA_CONTROLLER_PORT=$(sed -n 's/^KAFKA_CONTROLLER_PORT=//p' "$KAFKA_DIR/kafka.env")
	KAFKA_CDS_DUMP=$(sed -n 's/^KAFKA_CDS_DUMP=//p' "$KAFKA_DIR/kafka.env")
	export KAFKA_BOOTSTRAP
	pid=$(cat "$KAFKA_DIR/kafka.pid" 2>/dev/null) || pid=
	KAFKA_PID=
	if [ -n "$pid" ] && _kafka_is_ours "$pid"; then
		KAFKA_PID=$pid
	fi
	# Tools of the release that runs there.
	KAFKA_VERSION=$(sed -n 's/^KAFKA_RUNNING_VERSION=//p' "$KAFKA_DIR/kafka.env") \
		_kafka_prepare
}

# kafka_admin CLASS ARGS... — run an admin tool class of the running release
# against the node (--bootstrap-server added); its output as the tool prints
# it, its exit status.  Bounded by KAFKA_ADMIN_TIMEOUT.
kafka_admin() {
	local class=${1:-}
	if [ -z "$class" ] || [ -z "$KAFKA_CP_FILE" ] || [ -z "$KAFKA_BOOTSTRAP" ]; then
		_kafka_say "kafka_admin CLASS ARGS...: needs a node (kafka_up or kafka_attach)"
		return 2
	fi
	shift
	_kafka_tool "$class" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
}

# kafka-topics, kafka-configs and kafka-consumer-groups of the running release.
kafka_topics() {
	kafka_admin "$KAFKA_TOPICS_CLASS" "$@"
}

kafka_configs() {
	kafka_admin "$KAFKA_CONFIGS_CLASS" "$@"
}

kafka_groups() {
	kafka_admin "$KAFKA_GROUPS_CLASS" "$@"
}

# kafka_topic_partitions TOPIC — print the topic's partition count; false
# when the topic does not exist.
kafka_topic_partitions() {
	local out n
	out=$(kafka_topics --describe --topic "$1" 2>/dev/null) || return 1
	n=$(printf '%s\n' "$out" | sed -n 's/.*PartitionCount: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
	[ -n "$n" ] || return 1
	printf '%s\n' "$n"
}

# kafka_topic_config TOPIC NAME — print the value of a config set on the
# topic itself (a dynamic topic config, as kafka-configs --describe lists
# it); empty when the topic has no such override.  False on a tool failure.
kafka_topic_config() {
	local out
	out=$(kafka_configs --describe --entity-type topics --entity-name "$1") || return 1
	printf '%s\n' "$out" | awk -v k="  $2=" '
		index($0, k) == 1 {
			v = substr($0, length(k) + 1)
			sub(/ sensitive=(true|false) synonyms=.*$/, "", v)
			print v
			exit
		}'
}

# kafka_group_offsets GROUP — one line per partition the group has an
# offset for: TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG (a "-" where
# the tool prints one).  Empty when the group has none; false on a tool
# failure.
kafka_group_offsets() {
	local out
	out=$(kafka_groups --describe --group "$1" 2>/dev/null) || return 1
	printf '%s\n' "$out" | awk '
		$1 == "GROUP" && $2 == "TOPIC" {
			for (i = 1; i <= NF; i++) col[$i] = i
			next
		}
		("TOPIC" in col) && NF >= col["LAG"] && $(col["PARTITION"]) ~ /^[0-9]+$/ {
			print $(col["TOPIC"]), $(col["PARTITION"]), $(col["CURRENT-OFFSET"]),
				$(col["LOG-END-OFFSET"]), $(col["LAG"])
		}'
}

# kafka_flyt_topics ORG [CONTEXT] — the topic names of an organisation, one
# a line: the same set broker/flyt_broker --topics-for creates.
kafka_flyt_topics() {
	local org=${1//./-} ctx=${2:-flyt} t
	for t in instance-received instance-dispatched instance-registered \
		instance-requested-for-retry instance-deleted; do
		printf '%s.%s.event.%s\n' "$org" "$ctx" "$t"
	done
	for t in instance-registration-error instance-retry-request-error; do
		printf '%s.%s.event.error.%s\n' "$org" "$ctx" "$t"
	done
}

# kafka_create_topics ORG [PARTITIONS [CONTEXT]] — create the flyt topics of
# ORG (kafka_flyt_topics) with PARTITIONS partitions (default 1),
# replication factor 1.  Topics that exist already are left alone.  The
# tools run in parallel: each is a JVM start.
kafka_create_topics() {
	local org=${1:-} parts=${2:-1} ctx=${3:-flyt} t rc=0
	local -a pids=() names=()
	if [ -z "$org" ]; then
		_kafka_say "usage: kafka_create_topics ORG [PARTITIONS [CONTEXT]]"
		return 2
	fi
	while IFS= read -r t; do
		kafka_topics --create --if-not-exists --topic "$t" \
			--partitions "$parts" --replication-factor 1 >/dev/null &
		pids+=("$!")
		names+=("$t")
	done < <(kafka_flyt_topics "$org" "$ctx")
	for t in "${!pids[@]}"; do
		if ! wait "${pids[$t]}"; then
			_kafka_say "could not create topic ${names[$t]}"
			rc=1
		fi
	done
	return "$rc"
}

# --- command line --------------------------------------------------------------

_kafka_usage() {
	cat >&2 <<'EOF'
usage: script/kafka.sh up DIR [name=value]...
       script/kafka.sh down DIR
       script/kafka.sh topics|configs|groups DIR ARGS...
       script/kafka.sh classpath | fetch
EOF
	return 2
}

_kafka_main() {
	local cmd=${1:-} file dir
	[ "$#" -eq 0 ] || shift
	case $cmd in
	up)
		[ "$#" -ge 1 ] || _kafka_usage || return
		dir=$1
		shift
		# A failure half-way stops what was started.
		trap 'kafka_down' EXIT
		trap 'kafka_down; exit 130' INT
		trap 'kafka_down; exit 143' TERM
		trap 'kafka_down; exit 129' HUP
		kafka_up "$dir" "$@" || return 1
		trap - EXIT INT TERM HUP
		_kafka_say "Kafka $KAFKA_RUNNING_VERSION up in ${KAFKA_START_SECONDS}s, pid $KAFKA_PID, log $KAFKA_LOG"
		printf 'KAFKA_BOOTSTRAP=%s\n' "$KAFKA_BOOTSTRAP"
		;;
	down)
		[ "$#" -eq 1 ] || _kafka_usage || return
		[ -d "$1" ] || return 0
		KAFKA_DIR=$(cd "$1" && pwd -P) || return 1
		if [ -r "$KAFKA_DIR/kafka.env" ]; then
			KAFKA_CP_FILE=$(sed -n 's/^KAFKA_CP_FILE=//p' "$KAFKA_DIR/kafka.env")
			KAFKA_CDS_DUMP=$(sed -n 's/^KAFKA_CDS_DUMP=//p' "$KAFKA_DIR/kafka.env")
		fi
		kafka_down
		;;
	topics | configs | groups)
		[ "$#" -ge 1 ] || _kafka_usage || return
		dir=$1
		shift
		kafka_attach "$dir" || return 1
		"kafka_$cmd" "$@"
		;;
	classpath | fetch)
		[ "$#" -eq 0 ] || _kafka_usage || return
		local version
		version=$(_kafka_version) || return 1
		file=$(_kafka_resolve "$version") || return 1
		if [ "$cmd" = classpath ]; then
			printf '%s\n' "$file"
		fi
		;;
	*)
		_kafka_usage
		;;
	esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	_kafka_main "$@"
fi
