#!/bin/sh
# Sourced once by the image's entrypoint after 01-flyt-instance.sql: the
# authenticator's password from the Secret flyt-instance-postgres.
if [ -z "${AUTHENTICATOR_PASSWORD:-}" ]; then
	echo "02-authenticator-password.sh: AUTHENTICATOR_PASSWORD is empty (Secret flyt-instance-postgres, key authenticator-password)" >&2
	exit 1
fi
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v pw="$AUTHENTICATOR_PASSWORD" <<'SQL'
ALTER ROLE authenticator PASSWORD :'pw';
SQL
