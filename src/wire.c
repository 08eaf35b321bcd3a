/*-------------------------------------------------------------------------
 *
 * wire.c
 *	  The Kafka wire format of flyt_instance (SPEC section 4), in jansson.
 *
 * Everything that crosses the Kafka boundary is read and written here:
 * InstanceFlowHeaders, instances and the instance DTO.  jansson allocates
 * with palloc (see flyt_wire_init), so an ereport in the middle of a
 * validation leaks nothing: the memory context takes it all back.
 *
 * Error messages name paths and types, never values: instances carry
 * personal data.  For the same reason they keep the statement, which may
 * hold the payload as a literal, out of the server log (errhidestmt).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "wire.h"

static void *
wire_alloc(size_t size)
{
	return palloc(size);
}

static void
wire_free(void *ptr)
{
	if (ptr != NULL)
		pfree(ptr);
}

/* Makes jansson allocate in the current memory context. */
void
flyt_wire_init(void)
{
	json_set_alloc_funcs(wire_alloc, wire_free);
}

/*
 * Reports a JSON syntax error without quoting the input: jansson's message
 * ends in "near '<text>'", which could be personal data.
 */
static void
report_syntax_error(const char *what, const json_error_t *error)
{
	char		reason[JSON_ERROR_TEXT_LENGTH];
	char	   *near;

	strlcpy(reason, error->text, sizeof(reason));
	near = strstr(reason, " near ");
	if (near != NULL)
		*near = '\0';
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s is not valid JSON", what),
			 errdetail("%s at byte %d.", reason, error->position),
			 errhidestmt(true)));
}

/* Parses JSON text that crossed the Kafka boundary or came from SQL. */
static json_t *
load_json(const char *text, size_t len, const char *what)
{
	json_t	   *json;
	json_error_t error;

	json = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &error);
	if (json == NULL)
		report_syntax_error(what, &error);
	return json;
}

/* Is text a UUID in the canonical 8-4-4-4-12 hex form? */
static bool
parse_uuid(const char *text, pg_uuid_t *uuid)
{
	int			n = 0;

	for (int i = 0; text[i]; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (text[i] != '-')
				return false;
			continue;
		}
		if (!isxdigit((unsigned char) text[i]) || !isxdigit((unsigned char) text[i + 1]) || n >= UUID_LEN)
			return false;
		if (i + 1 == 8 || i + 1 == 13 || i + 1 == 18 || i + 1 == 23)
			return false;
		if (uuid)
		{
			char		byte[3] = {text[i], text[i + 1], '\0'};

			uuid->data[n] = (unsigned char) strtoul(byte, NULL, 16);
		}
		n++;
		i++;
	}
	return n == UUID_LEN && strlen(text) == 36;
}

static void
invalid_header(const char *field, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("headers.%s %s", field, problem),
			 errdetail("The instance flow headers are invalid."),
			 errhidestmt(true)));
}

/* Optional string field: absent, null or a string. */
static const char *
optional_string(json_t *headers, const char *field)
{
	json_t	   *v = json_object_get(headers, field);

	if (v == NULL || json_is_null(v))
		return NULL;
	if (!json_is_string(v))
		invalid_header(field, "must be a string");
	return json_string_value(v);
}

/* Optional integer field: absent, null or an integer. */
static bool
optional_integer(json_t *headers, const char *field, int64 *value)
{
	json_t	   *v = json_object_get(headers, field);

	if (v == NULL || json_is_null(v))
		return false;
	if (!json_is_integer(v))
		invalid_header(field, "must be an integer");
	*value = (int64) json_integer_value(v);
	return true;
}

/*
 * Parses and validates InstanceFlowHeaders JSON text.  Unknown fields are
 * kept in headers->json; any problem is an ERROR with SQLSTATE 22023 naming
 * the field.
 */
void
flyt_parse_flow_headers(const char *text, size_t len, FlytFlowHeaders *headers)
{
	json_t	   *json = load_json(text, len, "headers");
	json_t	   *v;
	int64		configuration_id;

	memset(headers, 0, sizeof(*headers));
	if (!json_is_object(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object"),
				 errdetail("The instance flow headers are invalid."),
			 errhidestmt(true)));
	headers->json = json;

	v = json_object_get(json, "sourceApplicationId");
	if (v == NULL || json_is_null(v))
		invalid_header("sourceApplicationId", "is required");
	if (!json_is_integer(v))
		invalid_header("sourceApplicationId", "must be an integer");
	headers->source_application_id = (int64) json_integer_value(v);

	v = json_object_get(json, "correlationId");
	if (v == NULL || json_is_null(v))
		invalid_header("correlationId", "is required");
	if (!json_is_string(v) || !parse_uuid(json_string_value(v), &headers->correlation_id))
		invalid_header("correlationId", "must be a UUID");

	headers->source_application_integration_id = optional_string(json, "sourceApplicationIntegrationId");
	headers->source_application_instance_id = optional_string(json, "sourceApplicationInstanceId");
	(void) optional_string(json, "archiveInstanceId");
	headers->has_integration_id = optional_integer(json, "integrationId", &headers->integration_id);
	headers->has_instance_id = optional_integer(json, "instanceId", &headers->instance_id);
	(void) optional_integer(json, "configurationId", &configuration_id);

	v = json_object_get(json, "fileIds");
	if (v != NULL && !json_is_null(v))
	{
		size_t		i;
		json_t	   *file_id;

		if (!json_is_array(v))
			invalid_header("fileIds", "must be an array of UUIDs");
		json_array_foreach(v, i, file_id)
		{
			if (!json_is_string(file_id) || !parse_uuid(json_string_value(file_id), NULL))
			{
				char		field[64];

				snprintf(field, sizeof(field), "fileIds[%zu]", i);
				invalid_header(field, "must be a UUID");
			}
		}
	}
}

/* Appends ".key" (or "key" at the root) to a path. */
static void
path_push_key(StringInfo path, const char *key)
{
	if (path->len > 0)
		appendStringInfoChar(path, '.');
	appendStringInfoString(path, key);
}

static void
invalid_instance(StringInfo path, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s %s", path->len > 0 ? path->data : "instance", problem),
			 errdetail("The instance is invalid."),
			 errhidestmt(true)));
}

/*
 * Validates one instance object at path and returns its canonical form
 * {"valuePerKey": {...}, "objectCollectionPerKey": {...}}; other fields
 * (id, createdAt) are dropped.
 */
static json_t *
canonical_instance(json_t *object, StringInfo path, int depth)
{
	json_t	   *values;
	json_t	   *collections;
	json_t	   *out_collections;
	json_t	   *result;
	const char *key;
	json_t	   *v;
	int			base = path->len;

	check_stack_depth();
	if (!json_is_object(object))
		invalid_instance(path, "must be a JSON object");
	if (depth > FLYT_MAX_INSTANCE_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is nested deeper than %d levels", path->data, FLYT_MAX_INSTANCE_DEPTH),
				 errdetail("The instance is invalid."),
			 errhidestmt(true)));

	values = json_object_get(object, "valuePerKey");
	if (values == NULL || json_is_null(values))
		values = json_object();
	else
	{
		path_push_key(path, "valuePerKey");
		if (!json_is_object(values))
			invalid_instance(path, "must be an object");
		json_object_foreach(values, key, v)
		{
			if (!json_is_string(v) && !json_is_null(v))
			{
				int			here = path->len;

				path_push_key(path, key);
				invalid_instance(path, "must be a string");
				path->len = here;
			}
		}
		json_incref(values);
		path->len = base;
		path->data[base] = '\0';
	}

	out_collections = json_object();
	collections = json_object_get(object, "objectCollectionPerKey");
	if (collections != NULL && !json_is_null(collections))
	{
		path_push_key(path, "objectCollectionPerKey");
		if (!json_is_object(collections))
			invalid_instance(path, "must be an object");
		json_object_foreach(collections, key, v)
		{
			int			here = path->len;
			json_t	   *out_array = json_array();

			path_push_key(path, key);
			if (!json_is_array(v) && !json_is_null(v))
				invalid_instance(path, "must be an array of instances");
			if (json_is_array(v))
			{
				size_t		i;
				json_t	   *child;
				int			key_end = path->len;

				json_array_foreach(v, i, child)
				{
					appendStringInfo(path, "[%zu]", i);
					json_array_append_new(out_array, canonical_instance(child, path, depth + 1));
					path->len = key_end;
					path->data[key_end] = '\0';
				}
			}
			json_object_set_new(out_collections, key, out_array);
			path->len = here;
			path->data[here] = '\0';
		}
		path->len = base;
		path->data[base] = '\0';
	}

	/* createdAt is ignored on input, but must still be one of its two forms */
	if (depth == 1)
	{
		v = json_object_get(object, "createdAt");
		if (v != NULL && !json_is_null(v) && !json_is_string(v) && !json_is_integer(v))
		{
			path_push_key(path, "createdAt");
			invalid_instance(path, "must be an ISO-8601 timestamp or epoch milliseconds");
		}
	}

	result = json_object();
	json_object_set_new(result, "valuePerKey", values);
	json_object_set_new(result, "objectCollectionPerKey", out_collections);
	return result;
}

/*
 * Parses and validates an instance (SPEC section 3) and returns its
 * canonical form.  Any problem is an ERROR: SQLSTATE 22023 naming the path,
 * or 54000 when the text is larger than flyt_instance.max_instance_bytes.
 */
json_t *
flyt_parse_instance(const char *text, size_t len)
{
	json_t	   *json;
	StringInfoData path;

	if (len > (size_t) flyt_max_instance_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("instance is too large"),
				 errdetail("The instance is %zu bytes; flyt_instance.max_instance_bytes allows %d.",
						   len, flyt_max_instance_bytes),
				 errhidestmt(true)));
	json = load_json(text, len, "instance");
	initStringInfo(&path);
	return canonical_instance(json, &path, 1);
}

/* Parses JSON that flyt_instance itself stored; a failure means corruption. */
json_t *
flyt_parse_stored_json(const char *text, size_t len, const char *what)
{
	json_t	   *json;
	json_error_t error;

	json = json_loadb(text, len, JSON_ALLOW_NUL, &error);
	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored %s cannot be read as JSON", what),
				 errdetail("jansson: %s at byte %d.", error.text, error.position)));
	return json;
}

/* The JSON text of a jsonb value. */
char *
flyt_jsonb_to_text(Jsonb *jb, size_t *len)
{
	StringInfoData buf;

	initStringInfo(&buf);
	(void) JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	*len = buf.len;
	return buf.data;
}

/* A jsonb value that flyt_instance stored, as jansson. */
json_t *
flyt_jsonb_to_json(Jsonb *jb, const char *what)
{
	size_t		len;
	char	   *text = flyt_jsonb_to_text(jb, &len);

	return flyt_parse_stored_json(text, len, what);
}

/* Compact JSON text (UTF-8, no escaping of non-ASCII), palloc'd. */
char *
flyt_json_dump(json_t *json)
{
	char	   *text = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);

	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not serialise JSON")));
	return text;
}

/* jansson → jsonb, for storing what was validated. */
Jsonb *
flyt_json_to_jsonb(json_t *json)
{
	char	   *text = flyt_json_dump(json);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* "2026-11-22T10:15:30.123Z": ISO-8601 in UTC with milliseconds, as Java's Instant with ms precision. */
void
flyt_format_timestamp(TimestampTz ts, char *buf, size_t buflen)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range for createdAt")));
	snprintf(buf, buflen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int) (fsec / 1000));
}

/* The instance DTO: {"id", "valuePerKey", "objectCollectionPerKey", "createdAt"}. */
char *
flyt_instance_dto(int64 id, json_t *payload, TimestampTz created_at)
{
	json_t	   *dto = json_object();
	json_t	   *v;
	char		ts[40];
	char	   *text;

	flyt_format_timestamp(created_at, ts, sizeof(ts));
	json_object_set_new(dto, "id", json_integer((json_int_t) id));
	v = json_object_get(payload, "valuePerKey");
	json_object_set(dto, "valuePerKey", v ? v : json_object());
	v = json_object_get(payload, "objectCollectionPerKey");
	json_object_set(dto, "objectCollectionPerKey", v ? v : json_object());
	json_object_set_new(dto, "createdAt", json_string(ts));
	text = flyt_json_dump(dto);
	json_decref(dto);
	return text;
}

/* A fresh random (version 4) UUID. */
void
flyt_new_correlation_id(pg_uuid_t *uuid)
{
	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random correlation id")));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
}

/* Lower-case 8-4-4-4-12 text of a UUID; buf holds at least 37 bytes. */
void
flyt_uuid_to_text(const pg_uuid_t *uuid, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	char	   *p = buf;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0f];
	}
	*p = '\0';
}

/* Sets headers.correlationId. */
void
flyt_set_correlation_id(json_t *headers, const pg_uuid_t *uuid)
{
	char		text[37];

	flyt_uuid_to_text(uuid, text);
	json_object_set_new(headers, "correlationId", json_string(text));
}
