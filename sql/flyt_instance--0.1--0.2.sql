/* flyt_instance 0.1 -> 0.2: the HTTP surface for PostgREST (schema flyt_api). */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.2'" to load this file. \quit

-------------------------------------------------------------------------------
-- flyt_web: PostgREST's anonymous role.  FINT's tokens carry no role claim,
-- so every request runs as this role; flyt_api.authorize() decides.  Roles
-- belong to the cluster, not the database: create it only once.
-------------------------------------------------------------------------------

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'flyt_web') THEN
		CREATE ROLE flyt_web NOLOGIN;
	END IF;
END
$$;

CREATE SCHEMA flyt_api;
COMMENT ON SCHEMA flyt_api IS
$$FINT Flyt instance service
Retry instances of the FINT Flyt flow. Callers authenticate with a bearer
token from FINT's identity provider: internal clients by their client id,
users by their organisation and a role of the role catalog (USER or better).$$;

CREATE FUNCTION flyt_api.authorize()
RETURNS void
AS 'MODULE_PATHNAME', 'flyt_api_authorize'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION flyt_api.authorize() IS
$$Check the caller's token (PostgREST's db-pre-request)
401 without a token; 403 unless the token's subject is an internal client or
its organisation and roles are authorised.$$;

CREATE FUNCTION flyt_api.retry(instance_id bigint)
RETURNS uuid
AS 'MODULE_PATHNAME', 'flyt_api_retry'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.retry(bigint) IS
$$Retry one instance
Queues instance-requested-for-retry with a fresh correlation id and returns
it. 404 when the instance is unknown; 500 when it has no flow headers or the
retry failed. Was POST /api/intern/handlinger/instanser/{instanceId}/prov-igjen.$$;

CREATE FUNCTION flyt_api.retry_batch(jsonb,
	OUT instance_id bigint, OUT status text, OUT correlation_id uuid, OUT error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_api_retry_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.retry_batch(jsonb) IS
$$Retry many instances
The body is the JSON array of instance ids. Each distinct id is retried on
its own; one result per id: status queued, not_found, no_flow_headers or
error, with the correlation id or the error. 400 when the body is not an
array of integers. Was POST /api/intern/handlinger/instanser/prov-igjen/batch.$$;

REVOKE ALL ON SCHEMA flyt_api FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
	flyt_api.authorize(),
	flyt_api.retry(bigint),
	flyt_api.retry_batch(jsonb)
FROM PUBLIC;
GRANT USAGE ON SCHEMA flyt_api TO flyt_web;
GRANT EXECUTE ON FUNCTION
	flyt_api.authorize(),
	flyt_api.retry(bigint),
	flyt_api.retry_batch(jsonb)
TO flyt_web;
