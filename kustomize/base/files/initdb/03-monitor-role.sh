#!/bin/sh
# Sourced once by the image's entrypoint: the role the postgres_exporter
# sidecar logs in as.  pg_monitor may run flyt_status(), flyt_metrics() and
# flyt_metric_samples() (the extension grants it) and read Postgres's
# statistics; nothing else.  Password from the Secret flyt-instance-postgres,
# key monitor-password.
if [ -z "${MONITOR_PASSWORD:-}" ]; then
	echo "03-monitor-role.sh: MONITOR_PASSWORD is empty (Secret flyt-instance-postgres, key monitor-password)" >&2
	exit 1
fi
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v pw="$MONITOR_PASSWORD" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flyt_monitor') AS missing \gset
\if :missing
CREATE ROLE flyt_monitor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
\endif
ALTER ROLE flyt_monitor PASSWORD :'pw';
GRANT pg_monitor TO flyt_monitor;
SQL
