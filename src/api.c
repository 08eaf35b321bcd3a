/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The HTTP surface for PostgREST (schema flyt_api): authorisation and
 *	  the two retry endpoints.
 *
 * PostgREST runs every request as its anonymous role flyt_web (FINT's tokens
 * carry no role claim) with the verified JWT payload in
 * request.jwt.claims.  flyt_api.authorize() decides, as the original
 * resource server did: users only, by their organisation and roles.
 * PostgREST calls it before each request (db-pre-request) and every API
 * function calls it again first.
 *
 * Errors use PostgREST's custom SQLSTATEs PTnnn, which become HTTP status
 * nnn; messages say what was missing, never the token.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "pg_jansson.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "guc.h"
#include "history.h"
#include "deadletter.h"
#include "retry.h"
#include "store.h"

PG_FUNCTION_INFO_V1(flyt_api_authorize);
PG_FUNCTION_INFO_V1(flyt_api_retry);
PG_FUNCTION_INFO_V1(flyt_api_retry_batch);
PG_FUNCTION_INFO_V1(flyt_api_dead_letters);
PG_FUNCTION_INFO_V1(flyt_api_dead_letter_redrive);
PG_FUNCTION_INFO_V1(flyt_api_dead_letter_discard);

#define ERRCODE_HTTP_400 MAKE_SQLSTATE('P','T','4','0','0')
#define ERRCODE_HTTP_401 MAKE_SQLSTATE('P','T','4','0','1')
#define ERRCODE_HTTP_403 MAKE_SQLSTATE('P','T','4','0','3')
#define ERRCODE_HTTP_404 MAKE_SQLSTATE('P','T','4','0','4')
#define ERRCODE_HTTP_500 MAKE_SQLSTATE('P','T','5','0','0')

/*
 * The role catalog (INTEROP.md 6.2).  A token's roles claim holds role URLs;
 * only these exact URLs count, anything else is dropped.  The names are
 * what flyt_instance.authorized_org_id_role_pairs lists.  Each role implies
 * the one named after it: DEVELOPER implies ADMIN, ADMIN implies USER.
 */
#define FLYT_ROLE_USER		0x01
#define FLYT_ROLE_ADMIN		0x02
#define FLYT_ROLE_DEVELOPER	0x04

typedef struct FlytCatalogRole
{
	int			bit;
	const char *name;
	const char *url;
	int			implies;
} FlytCatalogRole;

static const FlytCatalogRole role_catalog[] = {
	{FLYT_ROLE_DEVELOPER, "DEVELOPER", "https://role-catalog.vigoiks.no/vigo/flyt/developer", FLYT_ROLE_ADMIN},
	{FLYT_ROLE_ADMIN, "ADMIN", "https://role-catalog.vigoiks.no/vigo/flyt/admin", FLYT_ROLE_USER},
	{FLYT_ROLE_USER, "USER", "https://role-catalog.vigoiks.no/vigo/flyt/user", 0},
};

/* The API's endpoints need ROLE_USER, as the original's /api/intern paths. */
#define FLYT_REQUIRED_ROLE FLYT_ROLE_USER

/* Longest claim value quoted in an error message. */
#define MAX_QUOTED_CLAIM 200

/* The role whose URL (for_url) or name is text, or 0. */
static int
catalog_role(const char *text, bool for_url)
{
	for (int i = 0; i < (int) lengthof(role_catalog); i++)
		if (strcmp(text, for_url ? role_catalog[i].url : role_catalog[i].name) == 0)
			return role_catalog[i].bit;
	return 0;
}

/* The roles and every role they imply, transitively. */
static int
with_implied_roles(int roles)
{
	int			before;

	do
	{
		before = roles;
		for (int i = 0; i < (int) lengthof(role_catalog); i++)
			if (roles & role_catalog[i].bit)
				roles |= role_catalog[i].implies;
	} while (roles != before);
	return roles;
}

/* "DEVELOPER, USER", strongest first, or "no role". */
static char *
role_names(int roles)
{
	StringInfoData names;

	initStringInfo(&names);
	for (int i = 0; i < (int) lengthof(role_catalog); i++)
		if (roles & role_catalog[i].bit)
			appendStringInfo(&names, "%s%s", names.len ? ", " : "", role_catalog[i].name);
	return names.len ? names.data : "no role";
}

/*
 * A claim is missing when it is absent, not a string, or blank (only white
 * space), as the original's isNullOrBlank.
 */
static bool
claim_is_blank(json_t *claim)
{
	const char *p;

	if (!json_is_string(claim))
		return true;
	for (p = json_string_value(claim); *p; p++)
		if (!isspace((unsigned char) *p))
			return false;
	return true;
}

/*
 * A claim value as it goes into an error message: control characters become
 * '?' and it is cut after MAX_QUOTED_CLAIM bytes, so that a crafted value
 * can neither flood nor forge lines of the server log.
 */
static char *
quoted_claim(const char *value)
{
	size_t		len = strlen(value);
	char	   *quoted;

	if (len > MAX_QUOTED_CLAIM)
		len = pg_mbcliplen(value, len, MAX_QUOTED_CLAIM);
	quoted = pnstrdup(value, len);
	for (char *p = quoted; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			*p = '?';
	return len < strlen(value) ? psprintf("%s...", quoted) : quoted;
}

/*
 * Allows the request or raises PT401 or PT403, as the original's resource
 * server (flyt-web-resource-server 3.1.0, INTEROP.md 6.2-6.5) does:
 *
 * - no token: 401;
 * - a token without organizationid or objectidentifier (absent or blank):
 *   401, the original's BadCredentialsException "Missing required claims";
 * - the token's roles (exact role-catalog URLs; others dropped; no roles
 *   claim means none) are filtered by the roles that
 *   authorized_org_id_role_pairs lists for its organisation, THEN expanded
 *   by the hierarchy; the API needs USER, or it is 403.
 *
 * objectidentifier need not be a UUID: HEAD checks only that it is not
 * blank, and the retry endpoints do not use it.  The JWT subject plays no
 * part (the original's internal-client API is denyAll).
 */
static void
authorize_for(int required)
{
	const char *claims_text = GetConfigOption("request.jwt.claims", true, false);
	json_t	   *claims = NULL;
	json_t	   *roles;
	json_t	   *pairs;
	json_t	   *listed;
	json_t	   *role;
	const char *key;
	const char *org;
	json_t	   *value;
	bool		has_claims = false;
	bool		no_org;
	bool		no_oid;
	size_t		i;
	int			held = 0;
	int			unknown = 0;
	int			allowed = 0;
	int			granted;

	if (claims_text != NULL && claims_text[0] != '\0')
		claims = json_loads(claims_text, 0, NULL);
	if (json_is_object(claims))
	{
		/* PostgREST adds "role" itself, with or without a token */
		json_object_foreach(claims, key, value)
		{
			if (strcmp(key, "role") != 0)
				has_claims = true;
		}
	}
	if (!has_claims)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_401),
				 errmsg("authentication required"),
				 errdetail("The request carries no bearer token."),
				 errhint("Send a user's access token from FINT's identity provider in the Authorization header.")));

	no_org = claim_is_blank(json_object_get(claims, "organizationid"));
	no_oid = claim_is_blank(json_object_get(claims, "objectidentifier"));
	if (no_org || no_oid)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_401),
				 errmsg("missing required claims"),
				 (no_org && no_oid) ?
				 errdetail("The token's organizationid and objectidentifier claims are missing or blank.") :
				 errdetail("The token's %s claim is missing or blank.", no_org ? "organizationid" : "objectidentifier"),
				 errhint("Only a user's access token from FINT's identity provider is accepted: it carries organizationid, objectidentifier and roles.")));
	org = json_string_value(json_object_get(claims, "organizationid"));

	/* the roles the organisation may use; none when it is not listed */
	pairs = json_loads(flyt_authorized_org_id_role_pairs, 0, NULL);
	listed = json_object_get(pairs, org);
	if (!json_is_array(listed))
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_403),
				 errmsg("organisation %s is not authorised", quoted_claim(org)),
				 errdetail("flyt_instance.authorized_org_id_role_pairs does not list the token's organizationid."),
				 errhint("Organisations and the roles they authorise are set in flyt_instance.authorized_org_id_role_pairs.")));
	json_array_foreach(listed, i, role)
	{
		if (json_is_string(role))
			allowed |= catalog_role(json_string_value(role), false);
	}

	/* the token's roles: exact role-catalog URLs, anything else dropped */
	roles = json_object_get(claims, "roles");
	json_array_foreach(roles, i, role)
	{
		int			bit = json_is_string(role) ? catalog_role(json_string_value(role), true) : 0;

		if (bit == 0)
			unknown++;
		held |= bit;
	}

	/* filter by the organisation first, then expand the hierarchy */
	granted = with_implied_roles(held & allowed);
	if ((granted & required) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_403),
				 errmsg("the token has no role that organisation %s authorises", quoted_claim(org)),
				 errdetail("The token holds %s%s; flyt_instance.authorized_org_id_role_pairs lists %s for the organisation, which leaves the token with %s; %s.",
						   roles == NULL ? "no roles claim" : role_names(held),
						   unknown == 0 ? "" :
						   psprintf(" (and %d %s that %s not a Flyt role-catalog URL)", unknown,
									unknown == 1 ? "value" : "values", unknown == 1 ? "is" : "are"),
						   role_names(allowed), role_names(held & allowed),
						   required == FLYT_ROLE_ADMIN ?
						   "the admin API needs ADMIN, which a kept DEVELOPER implies" :
						   "the API needs USER, which a kept ADMIN or DEVELOPER implies"),
				 errhint("Flyt's roles are https://role-catalog.vigoiks.no/vigo/flyt/user, .../admin and .../developer; organisations and the roles they authorise are set in flyt_instance.authorized_org_id_role_pairs.")));
	json_decref(pairs);
	json_decref(claims);
}

/* The API's authorisation: ROLE_USER, as the original's /api/intern paths. */
static void
authorize(void)
{
	authorize_for(FLYT_REQUIRED_ROLE);
}

/* flyt_api.authorize() → void: PostgREST's db-pre-request. */
Datum
flyt_api_authorize(PG_FUNCTION_ARGS)
{
	authorize();
	PG_RETURN_VOID();
}

/*
 * flyt_retry_instance, with every failure that is not about the request
 * reported as PT500 (PostgREST would turn some of them into 4xx codes),
 * its text logged rather than answered.  Cancellation and shutdown keep
 * their own codes.
 */
static FlytRetryOutcome
retry_or_500(int64 instance_id, pg_uuid_t *correlation_id, FlytFlowOutcome *why)
{
	MemoryContext caller_context = CurrentMemoryContext;
	volatile FlytRetryOutcome outcome = FLYT_RETRY_QUEUED;

	PG_TRY();
	{
		outcome = flyt_retry_one(instance_id, flyt_requested_by(), correlation_id, why);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		if (flyt_error_is_systemic(edata->sqlerrcode))
			PG_RE_THROW();
		FlushErrorState();
		/* the reason is for the operator, not for whoever sent the request */
		ereport(LOG,
				(errmsg("flyt_instance: the retry of instance " INT64_FORMAT " failed: %s",
						instance_id, edata->message)));
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_500),
				 errmsg("the retry of instance " INT64_FORMAT " failed", instance_id),
				 errdetail("The server log has the reason.")));
	}
	PG_END_TRY();
	return outcome;
}

/*
 * flyt_api.retry(instance_id bigint) → uuid: POST /rpc/retry.  Unknown
 * instance: PT404; no flow headers or any failure: PT500.
 */
Datum
flyt_api_retry(PG_FUNCTION_ARGS)
{
	int64		instance_id;
	pg_uuid_t  *correlation_id = palloc(sizeof(pg_uuid_t));
	FlytRetryOutcome outcome;
	FlytFlowOutcome why = FLYT_FLOW_OUTCOME_ANSWERED;

	authorize();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_400),
				 errmsg("instance_id is required")));
	instance_id = PG_GETARG_INT64(0);

	outcome = retry_or_500(instance_id, correlation_id, &why);
	if (outcome == FLYT_RETRY_NOT_FOUND)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_404),
				 errmsg("instance " INT64_FORMAT " not found", instance_id)));
	/* as the original: 500 when history-service has no headers or does not answer */
	if (outcome == FLYT_RETRY_NO_FLOW_HEADERS && why == FLYT_FLOW_OUTCOME_UNKNOWN)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_500),
				 errmsg("could not find instance flow headers for registered instance with id=" INT64_FORMAT, instance_id)));
	if (outcome == FLYT_RETRY_NO_FLOW_HEADERS)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_500),
				 errmsg("instance " INT64_FORMAT " has no flow headers", instance_id),
				 errdetail("It was stored without InstanceFlowHeaders, and %s.", flyt_flow_outcome_detail(why))));
	PG_RETURN_UUID_P(correlation_id);
}

static void
bad_batch(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HTTP_400),
			 errmsg("the request body must be a JSON array of instance ids (integers)"),
			 errdetail("%s", detail)));
}

/*
 * flyt_api.retry_batch(jsonb) → setof (instance_id, status, correlation_id,
 * error): POST /rpc/retry_batch with the raw JSON array of ids as body.
 */
Datum
flyt_api_retry_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *body;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	Datum	   *ids;
	int			n = 0;
	int			size;
	Datum		max_id = DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MAX));
	Datum		min_id = DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MIN));

	authorize();
	if (PG_ARGISNULL(0))
		bad_batch("The body is empty.");
	body = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(body) || JB_ROOT_IS_SCALAR(body))
		bad_batch(JB_ROOT_IS_OBJECT(body) ? "The body is a JSON object." : "The body is a JSON scalar.");

	size = JB_ROOT_COUNT(body);
	ids = palloc(sizeof(Datum) * Max(size, 1));
	it = JsonbIteratorInit(&body->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token != WJB_ELEM)
			continue;
		if (v.type != jbvNumeric || numeric_is_nan(v.val.numeric) || numeric_is_inf(v.val.numeric) ||
			!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v.val.numeric),
											  DirectFunctionCall1(numeric_floor, NumericGetDatum(v.val.numeric)))))
			bad_batch(psprintf("Element %d is not an integer.", n + 1));
		if (!DatumGetBool(DirectFunctionCall2(numeric_le, NumericGetDatum(v.val.numeric), max_id)) ||
			!DatumGetBool(DirectFunctionCall2(numeric_ge, NumericGetDatum(v.val.numeric), min_id)))
			bad_batch(psprintf("Element %d is out of range for an instance id.", n + 1));
		ids[n++] = DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric));
	}

	InitMaterializedSRF(fcinfo, 0);
	flyt_retry_many((ReturnSetInfo *) fcinfo->resultinfo, ids, NULL, n, true);
	return (Datum) 0;
}

/*
 * The admin endpoints (dead letters): ROLE_ADMIN, as the original's
 * /api/intern/admin paths (INTEROP.md 6), after the same organisation filter
 * and hierarchy: DEVELOPER implies ADMIN.  Actions are recorded with the
 * token's subject (flyt_requested_by).
 */

/* flyt_api.dead_letters(...) → setof record: GET /rpc/dead_letters. */
Datum
flyt_api_dead_letters(PG_FUNCTION_ARGS)
{
	authorize_for(FLYT_ROLE_ADMIN);
	return flyt_dead_letters_srf(fcinfo);
}

static Datum
dead_letter_action(FunctionCallInfo fcinfo, bool redrive)
{
	int64		id;
	FlytDeadLetterOutcome outcome;

	authorize_for(FLYT_ROLE_ADMIN);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_400),
				 errmsg("id is required")));
	id = PG_GETARG_INT64(0);
	outcome = redrive ? flyt_dead_letter_redrive_one(id, flyt_requested_by())
		: flyt_dead_letter_discard_one(id, flyt_requested_by());
	if (outcome == FLYT_DL_NOT_FOUND)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_404),
				 errmsg("dead letter " INT64_FORMAT " not found", id)));
	PG_RETURN_TEXT_P(cstring_to_text(flyt_dead_letter_outcome_name(outcome)));
}

/* flyt_api.dead_letter_redrive(id bigint) → text: POST /rpc/dead_letter_redrive. */
Datum
flyt_api_dead_letter_redrive(PG_FUNCTION_ARGS)
{
	return dead_letter_action(fcinfo, true);
}

/* flyt_api.dead_letter_discard(id bigint) → text: POST /rpc/dead_letter_discard. */
Datum
flyt_api_dead_letter_discard(PG_FUNCTION_ARGS)
{
	return dead_letter_action(fcinfo, false);
}
