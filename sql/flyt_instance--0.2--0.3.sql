/* flyt_instance 0.2 -> 0.3: reliability (issue 10). */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.3'" to load this file. \quit

-- Everything flyt_instance stores and sends is UTF-8 (Kafka's JSON, jsonb
-- of the instances); another database encoding would garble or reject
-- Norwegian text far from where it entered.
DO $$
BEGIN
	IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
		RAISE EXCEPTION 'flyt_instance needs a database with encoding UTF8, not %',
			pg_catalog.getdatabaseencoding()
			USING HINT = 'Create the database with ENCODING ''UTF8'' (for example CREATE DATABASE flyt ENCODING ''UTF8'' TEMPLATE template0) and install the extension there.';
	END IF;
END
$$;

-------------------------------------------------------------------------------
-- The exact JSON text flyt_instance writes into Kafka headers and values:
-- compact, keys in the order jsonb keeps them.  The set-based cleanup uses
-- it, so that instance-deleted carries its flow headers byte for byte as
-- every other event does (jsonb::text adds spaces).
-------------------------------------------------------------------------------

CREATE FUNCTION flyt.wire_json(jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_wire_json'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flyt.wire_json(jsonb) IS
'The compact JSON text flyt_instance writes on the wire for a jsonb value (internal)';
REVOKE EXECUTE ON FUNCTION flyt.wire_json(jsonb) FROM PUBLIC;
