/* flyt_instance 0.3 -> 0.4: the original services' wire contract, authorisation and provisioning (issue 11). */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.4'" to load this file. \quit

-------------------------------------------------------------------------------
-- The wire contract of the original services (INTEROP.md section 5)
-------------------------------------------------------------------------------

COMMENT ON COLUMN flyt.outbox.headers IS 'Kafka headers as a JSON object of header name to the exact header value (UTF-8 text): flyt.instance-flow-headers and flyt.event-id; the worker adds origin.application.id and __TypeId__ when it sends';

COMMENT ON FUNCTION flyt_instance_dispatched(jsonb) IS
'Delete the instance named by headers.instanceId after it was dispatched; false when it was already gone
Records DISPATCHED and DELETED when it existed, and queues instance-deleted with these headers either way, as the original does.';

-- The flyt.instance-flow-headers header as the original writes it (Jackson's
-- InstanceFlowHeaders: nine fields in order, nulls written); the set-based
-- cleanup uses it.
CREATE FUNCTION flyt.wire_flow_headers(jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_wire_flow_headers'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flyt.wire_flow_headers(jsonb) IS
'The flyt.instance-flow-headers text flyt_instance writes on the wire for stored flow headers (internal)';
REVOKE EXECUTE ON FUNCTION flyt.wire_flow_headers(jsonb) FROM PUBLIC;

-- Rows queued by 0.3 hold their flow headers as they arrived; what 0.4
-- queues holds them as the original writes them.  Rewrite the waiting
-- rows, so that every record sent from now on has the original's form.
UPDATE flyt.outbox
SET headers = headers OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
		'flyt.instance-flow-headers',
		flyt.wire_flow_headers((headers OPERATOR(pg_catalog.->>) 'flyt.instance-flow-headers')::pg_catalog.jsonb))
WHERE headers OPERATOR(pg_catalog.?) 'flyt.instance-flow-headers';

-- Error events queued by 0.3 carry "args":{}; the original writes null.
UPDATE flyt.outbox
SET value = pg_catalog.replace(value, '"args":{}', '"args":null')
WHERE event_name IN ('instance-registration-error', 'instance-retry-request-error');

-------------------------------------------------------------------------------
-- Authorisation as the original's resource server (INTEROP.md section 6):
-- user tokens only (organizationid and objectidentifier required, exact
-- role-catalog URLs, the organisation's roles filter before the hierarchy);
-- JWT subjects ("internal clients") no longer open the API, and the setting
-- flyt_instance.internal_clients is gone.
-------------------------------------------------------------------------------

COMMENT ON SCHEMA flyt_api IS
$$FINT Flyt instance service
Retry instances of the FINT Flyt flow. Callers authenticate with a user's
bearer token from FINT's identity provider, with claims organizationid,
objectidentifier and roles (role-catalog URLs). Of the token's roles only
those its organisation is authorised for count; DEVELOPER implies ADMIN,
ADMIN implies USER, and the API needs USER.$$;

COMMENT ON FUNCTION flyt_api.authorize() IS
$$Check the caller's token (PostgREST's db-pre-request)
401 without a token, or when its organizationid or objectidentifier claim is
missing or blank. 403 when flyt_instance.authorized_org_id_role_pairs does not
list its organisation, or when it grants no USER: the token's roles (exactly
https://role-catalog.vigoiks.no/vigo/flyt/user, .../admin, .../developer) are
first filtered by the roles listed for the organisation, then DEVELOPER implies
ADMIN and ADMIN implies USER. The JWT subject opens nothing.$$;
