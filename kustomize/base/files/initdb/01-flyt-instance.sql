-- Run once by the image's entrypoint in database flyt (POSTGRES_DB) when the
-- data directory is initialised.
CREATE EXTENSION IF NOT EXISTS flyt_instance;

-- PostgREST logs in as authenticator and switches to flyt_web (its anonymous
-- role, created by the extension) for every request.  NOINHERIT: the
-- authenticator itself can do nothing.  The password is set by
-- 02-authenticator-password.sh.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
		CREATE ROLE authenticator LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOSUPERUSER;
	END IF;
END
$$;
GRANT flyt_web TO authenticator;
