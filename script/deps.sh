#!/usr/bin/env bash
#
# script/deps.sh — make sure the Debian packages the build and the tests need
# are installed (`make deps`, run first by `make test` and `make run`).
#
# Silent when everything is there.  Otherwise:
#   - as root: apt-get update, then apt-get install -y the missing packages;
#   - as anyone else: print the one `sudo apt-get install -y ...` line to run
#     and exit 1.
set -euo pipefail

# The packages of SPEC.md section 1, plus gcc and make: PGXS compiles with
# the compiler PostgreSQL was built with, and a fresh Debian 12 has none;
# plus what the tests use: jq and python3 (reading kcat's JSON, META.json),
# yamllint, nginx and envsubst (gettext-base) for the deployment files, and
# kubectl (Debian's kubernetes-client, unless a kubectl is there already:
# installing it over another package's /usr/bin/kubectl fails); and for
# the real Kafka broker of the tests (script/kafka.sh), Java 17 and Maven,
# unless a java and an mvn are there already; clang with libFuzzer for the
# fuzz target of the wire format (test/fuzz, make fuzz); Prometheus
# (promtool and the server) and postgres_exporter for the metrics and alerts
# (test/integration/metrics.sh; about 16 s to install on a fresh Debian 12);
# gdb, to stop a backend at one point of its commit
# (test/integration/worker_durability.sh).
# .ci/run installs this same list.
packages=(
	postgresql-15
	postgresql-server-dev-15
	librdkafka-dev
	libjansson-dev
	postgresql-15-pgtap
	libtap-parser-sourcehandler-pgtap-perl
	kcat
	gcc
	make
	jq
	python3
	yamllint
	nginx
	gettext-base
	clang-14
	libclang-rt-14-dev
	prometheus
	prometheus-postgres-exporter
	curl
	gdb
)

if ! command -v dpkg-query >/dev/null 2>&1; then
	# Not a Debian system: we cannot check, the build will tell.
	echo "deps: dpkg-query not found; not checking packages (this project expects Debian 12)" >&2
	exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
	# Status is e.g. "install ok installed"; an unknown package is an error.
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	case $status in
	*" ok installed") ;;
	*) missing+=("$pkg") ;;
	esac
done
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "Some packages this project needs are missing. Install them with:" >&2
	echo >&2
	echo "    sudo apt-get install -y ${missing[*]}" >&2
	echo >&2
	exit 1
fi

echo "deps: installing ${missing[*]}" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
