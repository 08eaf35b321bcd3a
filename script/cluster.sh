# shellcheck shell=bash
#
# script/cluster.sh — throw-away PostgreSQL clusters for tests and `make run`.
#
# A library: source it from a bash script, do not execute it.
#
#   . "$repo/script/cluster.sh"
#   cluster_trap                      # stop + remove the cluster on EXIT/INT/TERM/HUP
#   cluster_create -l '' \
#       -c "shared_preload_libraries = 'flyt_instance'" \
#       -c "flyt_instance.org_id = 'fintlabs.no'"
#   cluster_start
#   cluster_env                       # export PGHOST, PGPORT, PGUSER=postgres
#   psql -X -d postgres -c 'SELECT 1'
#   cluster_restart                   # e.g. to test a restart (cluster_crash: immediate stop)
#   cluster_destroy                   # idempotent; the trap calls it too
#
# Every cluster lives in a fresh `mktemp -d` directory:
#   $CLUSTER_DIR/data          the data directory
#   $CLUSTER_DIR/run           unix_socket_directories (what PGHOST points at)
#   $CLUSTER_DIR/postgres.log  the server log (pg_ctl -l)
# and has a port of its own ($CLUSTER_PORT).  With an empty listen_addresses
# (the default, used by the tests) the port only names the socket file; with
# `-l 127.0.0.1` (make run) the server also listens on TCP.
#
# PostgreSQL refuses to run as root.  When this library is used by root, the
# directory is handed to the `postgres` OS user (created by the Debian
# package) and initdb, pg_ctl and postgres run as that user through
# `runuser`; clients (psql, pg_regress, pg_prove) keep running as the caller
# and connect as the database user `postgres` over the socket (trust auth).
#
# One cluster per shell: the state is kept in the CLUSTER_* variables.  A
# script that needs a second cluster at the same time runs it in a child
# process (a subshell or another script), which has its own variables.
#
# Environment knobs:
#   PG_CONFIG            pg_config to use (default: pg_config on PATH); the
#                        server binaries come from `$PG_CONFIG --bindir`.
#   FLYT_KEEP_CLUSTER=1  cluster_destroy stops the server but keeps the
#                        directory (and says where it is), for debugging.
#   FLYT_PG_START_TIMEOUT  seconds pg_ctl -w waits for start-up (default 60).
#   FLYT_PG_PRELOAD      LD_PRELOAD for the server (script/asan.sh sets it,
#                        with ASAN_OPTIONS, which is passed on too).

# --- internal helpers --------------------------------------------------------

# Print a message from this library on stderr.
_cluster_say() {
	printf 'cluster: %s\n' "$*" >&2
}

# Directory with initdb, pg_ctl and postgres, from pg_config.
_cluster_bindir() {
	if [ -z "${_CLUSTER_BINDIR:-}" ]; then
		_CLUSTER_BINDIR=$("${PG_CONFIG:-pg_config}" --bindir) || {
			_cluster_say "cannot run ${PG_CONFIG:-pg_config} --bindir; is postgresql-server-dev-15 installed?"
			return 1
		}
	fi
	printf '%s\n' "$_CLUSTER_BINDIR"
}

# Run a server-side program (initdb, pg_ctl) as the cluster's owner: the
# `postgres` OS user when we are root, ourselves otherwise.  It runs from
# inside the cluster directory so that the server never inherits a working
# directory it cannot read (such as /root).  With FLYT_PG_PRELOAD set (make
# asan), the server and its children run with LD_PRELOAD and ASAN_OPTIONS.
_cluster_as_owner() {
	cluster_run_as_owner "$CLUSTER_DIR" "$@"
}

# cluster_run_as_owner DIR COMMAND... — the same for a directory of another
# cluster (a standby that a test manages itself).
cluster_run_as_owner() {
	local dir=$1
	shift
	local -a envs=()
	if [ -n "${FLYT_PG_PRELOAD:-}" ]; then
		envs=(env "LD_PRELOAD=$FLYT_PG_PRELOAD" "ASAN_OPTIONS=${ASAN_OPTIONS:-}")
	fi
	(
		cd "$dir" || exit 1
		if [ "$(id -u)" -eq 0 ]; then
			exec runuser -u postgres -- "${envs[@]}" "$@"
		else
			exec "${envs[@]}" "$@"
		fi
	)
}

# True when nothing listens on TCP port $1 of the loopback interface.
_cluster_port_free() {
	local port=$1
	if command -v ss >/dev/null 2>&1; then
		# -H: no header, so any output line means a listener on that port.
		[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]
	else
		# No ss (iproute2) on this machine: try to connect instead.
		! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
	fi
}

# Print a free port between 55000 and 59999.
_cluster_pick_port() {
	local i port
	for ((i = 0; i < 100; i++)); do
		port=$((55000 + RANDOM % 5000))
		if _cluster_port_free "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	_cluster_say "no free TCP port found between 55000 and 59999"
	return 1
}

# True when the cluster's postmaster is running.
_cluster_running() {
	[ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DATA/postmaster.pid" ] &&
		_cluster_as_owner "$(_cluster_bindir)/pg_ctl" -D "$CLUSTER_DATA" status >/dev/null 2>&1
}

# --- public functions --------------------------------------------------------

# cluster_log_tail [LINES] — print the end of the server log on stderr.
cluster_log_tail() {
	local lines=${1:-60}
	if [ -n "${CLUSTER_LOG:-}" ] && [ -f "$CLUSTER_LOG" ]; then
		printf -- '----- last %s lines of %s -----\n' "$lines" "$CLUSTER_LOG" >&2
		tail -n "$lines" "$CLUSTER_LOG" >&2
		printf -- '----- end of server log -----\n' >&2
	fi
}

# cluster_create [-l LISTEN_ADDRESSES] [-p PORT] [-c 'CONFIG LINE']...
#
# Creates the directory, runs initdb and writes the configuration: our
# defaults first, then each -c line in the order given (a later line wins,
# so callers can override any default).  Sets CLUSTER_DIR, CLUSTER_DATA,
# CLUSTER_SOCKDIR, CLUSTER_LOG, CLUSTER_PORT and CLUSTER_LISTEN.
cluster_create() {
	local listen='' port='' opt
	local -a extra=()
	local OPTIND=1 OPTARG
	while getopts 'l:p:c:' opt; do
		case $opt in
		l) listen=$OPTARG ;;
		p) port=$OPTARG ;;
		c) extra+=("$OPTARG") ;;
		*)
			_cluster_say "usage: cluster_create [-l listen_addresses] [-p port] [-c 'config line']..."
			return 2
			;;
		esac
	done

	if [ -n "${CLUSTER_DIR:-}" ]; then
		_cluster_say "this shell already has a cluster in $CLUSTER_DIR"
		return 1
	fi

	local bindir
	bindir=$(_cluster_bindir) || return 1
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		_cluster_say "running as root but there is no 'postgres' OS user to run the server as (install postgresql-15)"
		return 1
	fi

	# A short base directory keeps the socket path under the 107-byte limit,
	# and as root the postgres user must be able to reach it.
	local base=${TMPDIR:-/tmp}
	if [ "${#base}" -gt 60 ] || [ ! -d "$base" ] || [ ! -w "$base" ]; then
		base=/tmp
	fi
	CLUSTER_DIR=$(mktemp -d "$base/flyt_pg.XXXXXX") || {
		CLUSTER_DIR=''
		return 1
	}
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$CLUSTER_DIR"
		if ! runuser -u postgres -- test -w "$CLUSTER_DIR"; then
			# $TMPDIR is somewhere the postgres user cannot reach: use /tmp.
			rm -rf "$CLUSTER_DIR"
			CLUSTER_DIR=$(mktemp -d /tmp/flyt_pg.XXXXXX) || {
				CLUSTER_DIR=''
				return 1
			}
			chown postgres: "$CLUSTER_DIR"
		fi
	fi
	CLUSTER_DATA=$CLUSTER_DIR/data
	CLUSTER_SOCKDIR=$CLUSTER_DIR/run
	CLUSTER_LOG=$CLUSTER_DIR/postgres.log
	CLUSTER_LISTEN=$listen
	_cluster_as_owner mkdir -m 0700 "$CLUSTER_SOCKDIR" || return 1

	if [ -z "$port" ]; then
		port=$(_cluster_pick_port) || return 1
	fi
	CLUSTER_PORT=$port

	# -N: no fsync during initdb; the cluster is thrown away anyway.
	if ! _cluster_as_owner "$bindir/initdb" -D "$CLUSTER_DATA" -U postgres \
		--auth=trust -E UTF8 --locale=C -N >"$CLUSTER_DIR/initdb.log" 2>&1; then
		_cluster_say "initdb failed:"
		cat "$CLUSTER_DIR/initdb.log" >&2
		return 1
	fi

	# Append our settings, then the caller's, to postgresql.conf.  Written
	# through the owner so it also works when we are root.
	{
		printf '\n# ---- added by script/cluster.sh ----\n'
		printf "port = %s\n" "$CLUSTER_PORT"
		printf "listen_addresses = '%s'\n" "$CLUSTER_LISTEN"
		printf "unix_socket_directories = '%s'\n" "$CLUSTER_SOCKDIR"
		printf "fsync = off\n"
		printf "full_page_writes = off\n"
		printf "log_line_prefix = '%%m [%%p] %%q%%a '\n"
		if [ "${#extra[@]}" -gt 0 ]; then
			printf '# ---- caller settings ----\n'
			printf '%s\n' "${extra[@]}"
		fi
	} | _cluster_as_owner tee -a "$CLUSTER_DATA/postgresql.conf" >/dev/null
}

# cluster_start — start the server and wait until it accepts connections.
# On failure the end of the server log is printed.  With a TCP listener, a
# port taken between picking and binding it is retried on another port.
cluster_start() {
	local bindir attempt
	bindir=$(_cluster_bindir) || return 1
	if [ -z "${CLUSTER_DIR:-}" ]; then
		_cluster_say "cluster_start: call cluster_create first"
		return 1
	fi
	for attempt in 1 2 3 4 5; do
		if _cluster_as_owner "$bindir/pg_ctl" -D "$CLUSTER_DATA" -l "$CLUSTER_LOG" \
			-w -t "${FLYT_PG_START_TIMEOUT:-60}" start >/dev/null; then
			return 0
		fi
		if [ -n "$CLUSTER_LISTEN" ] && [ "$attempt" -lt 5 ] &&
			grep -q 'could not bind' "$CLUSTER_LOG" 2>/dev/null; then
			CLUSTER_PORT=$(_cluster_pick_port) || break
			_cluster_say "port taken, retrying on port $CLUSTER_PORT"
			printf 'port = %s\n' "$CLUSTER_PORT" |
				_cluster_as_owner tee -a "$CLUSTER_DATA/postgresql.conf" >/dev/null
			# Export the new port if the caller already exported the old one.
			if [ -n "${PGHOST:-}" ] && [ "$PGHOST" = "$CLUSTER_SOCKDIR" ]; then
				export PGPORT=$CLUSTER_PORT
			fi
			continue
		fi
		break
	done
	_cluster_say "the server in $CLUSTER_DIR did not start"
	cluster_log_tail 60
	return 1
}

# cluster_stop [fast|immediate|smart] — stop the server, keep the directory.
# A fast stop that does not finish in time falls back to an immediate one.
cluster_stop() {
	local mode=${1:-fast} bindir
	bindir=$(_cluster_bindir) || return 1
	[ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DATA/postmaster.pid" ] || return 0
	if _cluster_as_owner "$bindir/pg_ctl" -D "$CLUSTER_DATA" -m "$mode" -w -t 30 stop >/dev/null 2>&1; then
		return 0
	fi
	if _cluster_running; then
		_cluster_say "$mode stop failed, stopping immediately"
		_cluster_as_owner "$bindir/pg_ctl" -D "$CLUSTER_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	if _cluster_running; then
		# Last resort: the postmaster we started (first line of postmaster.pid).
		local pid
		pid=$(head -n 1 "$CLUSTER_DATA/postmaster.pid" 2>/dev/null || true)
		if [ -n "$pid" ]; then
			_cluster_say "killing postmaster $pid"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	return 0
}

# cluster_crash — stop the server the way a crash would (immediate mode: no
# shutdown checkpoint, crash recovery on the next start).
cluster_crash() {
	cluster_stop immediate
}

# cluster_restart [fast|immediate] — stop (fast by default) and start again.
cluster_restart() {
	cluster_stop "${1:-fast}" && cluster_start
}

# cluster_env — export what libpq clients need to reach the cluster.
cluster_env() {
	export PGHOST=$CLUSTER_SOCKDIR
	export PGPORT=$CLUSTER_PORT
	export PGUSER=postgres
}

# cluster_destroy — stop the server and remove the directory.  Idempotent and
# safe in traps: never fails, does nothing when there is no cluster.
cluster_destroy() {
	[ -n "${CLUSTER_DIR:-}" ] || return 0
	local dir=$CLUSTER_DIR
	cluster_stop fast || true
	if [ "${FLYT_KEEP_CLUSTER:-0}" = 1 ]; then
		_cluster_say "FLYT_KEEP_CLUSTER=1: keeping $dir"
	else
		rm -rf "$dir" || true
	fi
	CLUSTER_DIR=''
	return 0
}

# cluster_trap [COMMAND] — destroy the cluster whenever the shell ends: on
# EXIT, and on INT/TERM/HUP (which then exit 128+signal).  COMMAND, when
# given, runs first (e.g. to kill a helper process of the caller).
cluster_trap() {
	local pre=${1:-:}
	# shellcheck disable=SC2064  # expand $pre now, on purpose
	trap "$pre; cluster_destroy" EXIT
	# shellcheck disable=SC2064
	trap "$pre; cluster_destroy; exit 130" INT
	# shellcheck disable=SC2064
	trap "$pre; cluster_destroy; exit 143" TERM
	# shellcheck disable=SC2064
	trap "$pre; cluster_destroy; exit 129" HUP
}
