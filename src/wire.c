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
#include <limits.h>

#include "access/detoast.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
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

/* Longest path quoted in an error message; longer ones are cut. */
#define FLYT_MAX_QUOTED_PATH 200

/*
 * A path as it goes into an error message: control characters become '?'
 * and anything past FLYT_MAX_QUOTED_PATH bytes is cut (at a character
 * boundary) and replaced by "...", so that a crafted key can neither flood
 * nor forge lines of the server log.  Paths are made of keys, which jansson
 * has checked to be UTF-8.
 */
static char *
quoted_path(const char *path)
{
	size_t		len = strlen(path);
	bool		cut = len > FLYT_MAX_QUOTED_PATH;
	char	   *quoted;

	if (cut)
	{
		len = FLYT_MAX_QUOTED_PATH;
		while (len > 0 && ((unsigned char) path[len] & 0xC0) == 0x80)
			len--;
	}
	quoted = palloc(len + 4);
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) path[i];

		quoted[i] = (c < 0x20 || c == 0x7F) ? '?' : (char) c;
	}
	strcpy(quoted + len, cut ? "..." : "");
	return quoted;
}

/*
 * Reports a JSON syntax error without quoting the input: jansson's message
 * ends in "near '<text>'", and some quote a piece of the input in the
 * message itself ("invalid Unicode '\uD800'"); either could be personal data.
 */
static void
report_syntax_error(const char *what, const json_error_t *error)
{
	char		reason[JSON_ERROR_TEXT_LENGTH];
	char	   *quote;

	strlcpy(reason, error->text, sizeof(reason));
	quote = strstr(reason, " near ");
	if (quote != NULL)
		*quote = '\0';
	quote = strstr(reason, " '");
	if (quote != NULL)
		*quote = '\0';
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

	/*
	 * JSON_ALLOW_NUL: a string with \u0000 is read, so that the validation
	 * can name its path; PostgreSQL cannot store it and it is rejected then.
	 */
	json = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &error);
	if (json == NULL)
		report_syntax_error(what, &error);
	return json;
}

/*
 * What one cheap pass over JSON text tells before jansson builds a tree of
 * it: how many values it holds (objects, arrays, strings, numbers, booleans
 * and nulls; not keys) and how deep it nests.  The pass stops as soon as
 * either exceeds its limit.  It allocates nothing and never fails: on text
 * that is not JSON its figures are approximate, and jansson then reports the
 * syntax error.
 */
typedef struct JsonShape
{
	int64		values;
	int			depth;			/* deepest nesting of objects and arrays */
	bool		too_many;		/* values exceeded max_values */
	bool		too_deep;		/* depth exceeded max_depth */
	const char *key;			/* then: the top-level key it happened under */
	size_t		key_len;		/* (raw JSON text between the quotes) */
} JsonShape;

/* A byte of a number, true, false or null (ASCII only, whatever the locale). */
static bool
is_word_byte(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		c == '-' || c == '+' || c == '.';
}

static void
scan_json(const char *text, size_t len, int64 max_values, int max_depth,
		  JsonShape *shape)
{
	int			depth = 0;
	const char *key = NULL;
	size_t		key_len = 0;

	memset(shape, 0, sizeof(*shape));
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c == '{' || c == '[')
		{
			shape->values++;
			if (++depth > shape->depth)
				shape->depth = depth;
			if (depth > max_depth)
			{
				shape->too_deep = true;
				shape->key = key;
				shape->key_len = key_len;
				return;
			}
		}
		else if (c == '}' || c == ']')
		{
			if (depth > 0)
				depth--;
			if (depth == 0)
				key = NULL;
		}
		else if (c == '"')
		{
			size_t		start = i + 1;
			size_t		j;

			for (i = start; i < len && text[i] != '"'; i++)
			{
				if (text[i] == '\\')
					i++;
			}
			/* a string followed by ':' is a key, not a value */
			for (j = i + 1; j < len && (text[j] == ' ' || text[j] == '\t' ||
										 text[j] == '\n' || text[j] == '\r'); j++)
				;
			if (j < len && text[j] == ':')
			{
				if (depth == 1)
				{
					key = text + start;
					key_len = Min(i, len) - start;
				}
			}
			else
				shape->values++;
		}
		else if (is_word_byte(c) && (i == 0 || !is_word_byte((unsigned char) text[i - 1])))
			shape->values++;	/* a number, true, false or null */

		if (shape->values > max_values)
		{
			shape->too_many = true;
			return;
		}
	}
}

/*
 * The top-level key of a JsonShape for a message, or NULL when it has
 * escapes, control characters or bytes that are not UTF-8 (it is raw text
 * that jansson has not read yet).
 */
static char *
shape_key(const JsonShape *shape)
{
	if (shape->key == NULL || shape->key_len == 0 ||
		pg_encoding_verifymbstr(PG_UTF8, shape->key, (int) shape->key_len) != (int) shape->key_len)
		return NULL;
	for (size_t i = 0; i < shape->key_len; i++)
	{
		unsigned char c = (unsigned char) shape->key[i];

		if (c < 0x20 || c == 0x7F || c == '\\')
			return NULL;
	}
	return pnstrdup(shape->key, shape->key_len);
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
			 errmsg("headers.%s %s", quoted_path(field), problem),
			 errdetail("The instance flow headers are invalid."),
			 errhidestmt(true)));
}

static void
headers_too_large(size_t len, bool more)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("headers are too large"),
			 more ?
			 errdetail("The instance flow headers are more than %zu bytes of JSON text; at most %d are accepted.",
					   len, FLYT_MAX_FLOW_HEADERS_BYTES) :
			 errdetail("The instance flow headers are %zu bytes of JSON text; at most %d are accepted.",
					   len, FLYT_MAX_FLOW_HEADERS_BYTES),
			 errhidestmt(true)));
}

static void
instance_too_large(size_t len, bool more)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("instance is too large"),
			 more ?
			 errdetail("The instance is more than %zu bytes of JSON text; flyt_instance.max_instance_bytes allows %d.",
					   len, flyt_max_instance_bytes) :
			 errdetail("The instance is %zu bytes of JSON text; flyt_instance.max_instance_bytes allows %d.",
					   len, flyt_max_instance_bytes),
			 errhidestmt(true)));
}

static void
instance_too_many_values(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("instance has too many values"),
			 errdetail("An instance may hold at most %d JSON values (objects, arrays, strings, numbers, booleans and nulls).",
					   FLYT_MAX_INSTANCE_VALUES),
			 errhidestmt(true)));
}

/* Appends ".key" (or "key" at the root) to a path. */
static void
path_push_key(StringInfo path, const char *key)
{
	if (path->len > 0)
		appendStringInfoChar(path, '.');
	appendStringInfoString(path, key);
}

/* Cuts a path back to len bytes. */
static void
path_truncate(StringInfo path, int len)
{
	path->len = len;
	path->data[len] = '\0';
}

/*
 * Checks every string in the flow headers, known fields and unknown ones
 * (which are kept and sent on), for what PostgreSQL cannot store: \u0000.
 * The nesting is at most FLYT_MAX_FLOW_HEADERS_DEPTH (scan_json).
 */
static void
check_header_strings(json_t *json, StringInfo path)
{
	int			base = path->len;

	check_stack_depth();
	if (json_is_string(json))
	{
		if (memchr(json_string_value(json), '\0', json_string_length(json)) != NULL)
			invalid_header(path->data, "must not contain \\u0000");
	}
	else if (json_is_object(json))
	{
		const char *key;
		json_t	   *v;

		json_object_foreach(json, key, v)
		{
			path_push_key(path, key);
			check_header_strings(v, path);
			path_truncate(path, base);
		}
	}
	else if (json_is_array(json))
	{
		size_t		i;
		json_t	   *v;

		json_array_foreach(json, i, v)
		{
			appendStringInfo(path, "[%zu]", i);
			check_header_strings(v, path);
			path_truncate(path, base);
		}
	}
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
 * the field, or 54000 when the text is larger than
 * FLYT_MAX_FLOW_HEADERS_BYTES.  They are sent on with every event of the
 * instance, hence the limits on their size and nesting.
 */
void
flyt_parse_flow_headers(const char *text, size_t len, FlytFlowHeaders *headers)
{
	json_t	   *json;
	json_t	   *v;
	int64		configuration_id;
	JsonShape	shape;
	StringInfoData path;

	memset(headers, 0, sizeof(*headers));
	if (len > FLYT_MAX_FLOW_HEADERS_BYTES)
		headers_too_large(len, false);
	scan_json(text, len, PG_INT64_MAX, FLYT_MAX_FLOW_HEADERS_DEPTH, &shape);
	if (shape.too_deep)
	{
		char	   *key = shape_key(&shape);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 key ? errmsg("headers.%s is nested deeper than %d levels",
							  quoted_path(key), FLYT_MAX_FLOW_HEADERS_DEPTH) :
				 errmsg("headers are nested deeper than %d levels",
						FLYT_MAX_FLOW_HEADERS_DEPTH),
				 errdetail("The instance flow headers are invalid."),
				 errhidestmt(true)));
	}

	json = load_json(text, len, "headers");
	if (!json_is_object(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object"),
				 errdetail("The instance flow headers are invalid."),
				 errhidestmt(true)));
	headers->json = json;
	initStringInfo(&path);
	check_header_strings(json, &path);

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

static void
invalid_instance(StringInfo path, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s %s", path->len > 0 ? quoted_path(path->data) : "instance", problem),
			 errdetail("The instance is invalid."),
			 errhidestmt(true)));
}

/* State of turning a parsed instance into its canonical form. */
typedef struct Canonical
{
	StringInfoData path;		/* of the value being validated */
	json_t	   *empty_object;	/* shared by every absent or null map */
	json_t	   *empty_array;	/* shared by every null collection */
} Canonical;

/*
 * Validates one instance object at c->path and turns it, in place, into its
 * canonical form {"valuePerKey": {...}, "objectCollectionPerKey": {...}}:
 * other fields (id, createdAt, unknown ones) are dropped, absent or null
 * maps become empty ones and null collections empty arrays.  Working in
 * place, with one shared empty object and array, keeps the memory of an
 * instance at the one tree jansson built (a copy would double it, and more
 * for instances full of empty objects).
 */
static void
canonicalise_instance(Canonical *c, json_t *object, int depth)
{
	StringInfo	path = &c->path;
	int			base = path->len;
	json_t	   *values;
	json_t	   *collections;
	const char *key;
	json_t	   *v;

	check_stack_depth();
	if (!json_is_object(object))
		invalid_instance(path, "must be a JSON object");
	if (depth > FLYT_MAX_INSTANCE_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is nested deeper than %d levels", quoted_path(path->data),
						FLYT_MAX_INSTANCE_DEPTH),
				 errdetail("The instance is invalid."),
				 errhidestmt(true)));

	values = json_object_get(object, "valuePerKey");
	if (values == NULL || json_is_null(values))
		values = c->empty_object;
	else
	{
		path_push_key(path, "valuePerKey");
		if (!json_is_object(values))
			invalid_instance(path, "must be an object");
		json_object_foreach(values, key, v)
		{
			if (json_is_null(v))
				continue;
			if (!json_is_string(v))
			{
				path_push_key(path, key);
				invalid_instance(path, "must be a string");
			}
			if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL)
			{
				path_push_key(path, key);
				invalid_instance(path, "must not contain \\u0000");
			}
		}
		path_truncate(path, base);
	}

	collections = json_object_get(object, "objectCollectionPerKey");
	if (collections == NULL || json_is_null(collections))
		collections = c->empty_object;
	else
	{
		path_push_key(path, "objectCollectionPerKey");
		if (!json_is_object(collections))
			invalid_instance(path, "must be an object");
		json_object_foreach(collections, key, v)
		{
			int			here = path->len;

			path_push_key(path, key);
			if (json_is_null(v))
				json_object_set(collections, key, c->empty_array);	/* same key: safe while iterating */
			else if (!json_is_array(v))
				invalid_instance(path, "must be an array of instances");
			else
			{
				size_t		i;
				json_t	   *child;
				int			key_end = path->len;

				json_array_foreach(v, i, child)
				{
					appendStringInfo(path, "[%zu]", i);
					canonicalise_instance(c, child, depth + 1);
					path_truncate(path, key_end);
				}
			}
			path_truncate(path, here);
		}
		path_truncate(path, base);
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

	json_incref(values);
	json_incref(collections);
	json_object_clear(object);
	json_object_set_new(object, "valuePerKey", values);
	json_object_set_new(object, "objectCollectionPerKey", collections);
}

/* Is text[0..len) a JSON number (RFC 8259 grammar)? */
static bool
is_json_number(const char *t, size_t len)
{
	size_t		i = 0;

	if (i < len && t[i] == '-')
		i++;
	if (i >= len || !isdigit((unsigned char) t[i]))
		return false;
	if (t[i] == '0')
		i++;
	else
		while (i < len && isdigit((unsigned char) t[i]))
			i++;
	if (i < len && t[i] == '.')
	{
		if (++i >= len || !isdigit((unsigned char) t[i]))
			return false;
		while (i < len && isdigit((unsigned char) t[i]))
			i++;
	}
	if (i < len && (t[i] == 'e' || t[i] == 'E'))
	{
		i++;
		if (i < len && (t[i] == '+' || t[i] == '-'))
			i++;
		if (i >= len || !isdigit((unsigned char) t[i]))
			return false;
		while (i < len && isdigit((unsigned char) t[i]))
			i++;
	}
	return i == len;
}

/*
 * The original reads valuePerKey as Jackson's Map<String, String>, which
 * takes a number or a boolean as its text: {"n": 1.50, "b": true} is
 * {"n": "1.50", "b": "true"}.  Every number, true and false that is a
 * member value of a valuePerKey object is quoted here, exactly as written,
 * before jansson (which would keep 1.50 only as a double) reads the text.
 * Only the objects under a key written "valuePerKey" are touched; the
 * caller validates the result as usual.  Returns NULL when there is nothing
 * to quote, else the new text, *out_len bytes long.
 */
static char *
quote_scalar_members(const char *text, size_t len, size_t *out_len)
{
	StringInfoData buf;
	size_t		copied = 0;
	int			depth = 0;
	int			values_depth = -1;	/* depth inside a valuePerKey object */
	bool		values_key = false; /* the last key was "valuePerKey" */
	bool		after_colon = false;

	buf.data = NULL;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c == '"')
		{
			size_t		start = i + 1;

			for (i++; i < len && text[i] != '"'; i++)
				if (text[i] == '\\')
					i++;
			if (i >= len)
				break;			/* no closing quote: jansson reports it */
			if (!after_colon)	/* a key, or an array element */
				values_key = (i - start == 11 && memcmp(text + start, "valuePerKey", 11) == 0);
		}
		else if (c == ':')
		{
			after_colon = true;
			continue;
		}
		else if (c == '{' || c == '[')
		{
			depth++;
			if (c == '{' && after_colon && values_key && values_depth < 0)
				values_depth = depth;
		}
		else if (c == '}' || c == ']')
		{
			if (depth == values_depth)
				values_depth = -1;
			depth--;
		}
		else if (after_colon && depth == values_depth && is_word_byte(c))
		{
			size_t		start = i;

			while (i < len && is_word_byte((unsigned char) text[i]))
				i++;
			if (is_json_number(text + start, i - start) ||
				(i - start == 4 && memcmp(text + start, "true", 4) == 0) ||
				(i - start == 5 && memcmp(text + start, "false", 5) == 0))
			{
				if (buf.data == NULL)
				{
					initStringInfo(&buf);
					enlargeStringInfo(&buf, (int) Min(len + len / 8 + 16, MaxAllocSize / 2));
				}
				appendBinaryStringInfo(&buf, text + copied, (int) (start - copied));
				appendStringInfoChar(&buf, '"');
				appendBinaryStringInfo(&buf, text + start, (int) (i - start));
				appendStringInfoChar(&buf, '"');
				copied = i;
			}
			i--;
		}
		after_colon = false;
	}
	if (buf.data == NULL)
		return NULL;
	appendBinaryStringInfo(&buf, text + copied, (int) (len - copied));
	*out_len = buf.len;
	return buf.data;
}

/*
 * Parses and validates an instance (SPEC section 3) and returns its
 * canonical form.  Any problem is an ERROR: SQLSTATE 22023 naming the path,
 * or 54000 when the text is larger than flyt_instance.max_instance_bytes or
 * holds more than FLYT_MAX_INSTANCE_VALUES values.
 *
 * Memory: both limits are checked before any tree is built.  jansson's tree
 * costs about 300 bytes per value (600 for an empty object), storing it as
 * jsonb (flyt_json_to_jsonb) about 300 more at its peak, so one instance
 * needs at most about 100 MB, and a few times its size when it is mostly
 * long strings.  The canonical tree shares its empty objects and arrays:
 * treat it as read-only.
 */
json_t *
flyt_parse_instance(const char *text, size_t len)
{
	json_t	   *json;
	JsonShape	shape;
	Canonical	c;
	char	   *quoted;
	size_t		quoted_len = 0;

	if (len > (size_t) flyt_max_instance_bytes)
		instance_too_large(len, false);
	scan_json(text, len, FLYT_MAX_INSTANCE_VALUES, INT_MAX, &shape);
	if (shape.too_many)
		instance_too_many_values();

	quoted = quote_scalar_members(text, len, &quoted_len);
	if (quoted != NULL)
	{
		json = load_json(quoted, quoted_len, "instance");
		pfree(quoted);
	}
	else
		json = load_json(text, len, "instance");
	initStringInfo(&c.path);
	c.empty_object = json_object();
	c.empty_array = json_array();
	canonicalise_instance(&c, json, 1);
	json_decref(c.empty_object);
	json_decref(c.empty_array);
	pfree(c.path.data);
	return json;
}

/*
 * The compact JSON text of a jsonb value (no spaces: the form a message
 * arrives in from Kafka), for the SQL functions that do what the consumer
 * does.  Raises the size and value-count errors of the consumer's path as
 * soon as the text would exceed max_bytes or hold more than max_values
 * values, so that the text of a huge argument is never built.
 */
typedef enum WireText
{
	WIRE_INSTANCE,
	WIRE_HEADERS,
	WIRE_STORED					/* no limits: what flyt_instance stored */
} WireText;

static void
wire_text_too_large(WireText kind, size_t limit)
{
	if (kind == WIRE_INSTANCE)
		instance_too_large(limit, true);
	else if (kind == WIRE_HEADERS)
		headers_too_large(limit, true);
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("JSON text is too large")));
}

/* Appends a JSON string of len bytes (escape_json wants a C string). */
static void
append_json_string(StringInfo buf, const char *s, int len)
{
	int			plain = 0;		/* start of the bytes not written yet */

	appendStringInfoChar(buf, '"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		appendBinaryStringInfo(buf, s + plain, i - plain);
		plain = i + 1;
		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			default:
				/* upper case, as jansson writes it */
				appendStringInfo(buf, "\\u%04X", c);
				break;
		}
	}
	appendBinaryStringInfo(buf, s + plain, len - plain);
	appendStringInfoChar(buf, '"');
}

/*
 * Is this numeric text one that jansson reads as an integer and writes back
 * the same (digits only, within int64)?  Others it writes in its own way.
 */
static bool
is_plain_integer(const char *s)
{
	int			digits = 0;

	if (*s == '-')
		s++;
	for (; *s; s++)
	{
		if (!isdigit((unsigned char) *s))
			return false;
		digits++;
	}
	return digits > 0 && digits <= 18;
}

/*
 * Appends a scalar; *plain (when not NULL) becomes false at a number that
 * is not a plain integer (see jsonb_container_text).
 */
static void
append_jsonb_scalar(StringInfo buf, const JsonbValue *v, WireText kind, size_t max_bytes,
					bool *plain)
{
	switch (v->type)
	{
		case jbvString:
			/* the quoted text is longer still: do not build it */
			if ((size_t) buf->len + v->val.string.len > max_bytes)
				wire_text_too_large(kind, max_bytes);
			append_json_string(buf, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			{
				char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
																	NumericGetDatum(v->val.numeric)));

				if (plain != NULL && !is_plain_integer(s))
					*plain = false;
				appendStringInfoString(buf, s);
				pfree(s);
				break;
			}
		case jbvBool:
			appendStringInfoString(buf, v->val.boolean ? "true" : "false");
			break;
		case jbvNull:
			appendStringInfoString(buf, "null");
			break;
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
}

static char *jsonb_container_text(JsonbContainer *container, WireText kind, size_t *len,
								  bool *plain);

static char *
jsonb_to_wire_text(Jsonb *jb, WireText kind, size_t *len)
{
	return jsonb_container_text(&jb->root, kind, len, NULL);
}

/*
 * The compact text of a jsonb container.  This is byte for byte what jansson
 * writes for the same tree (flyt_json_dump of flyt_jsonb_to_json), keys in
 * jsonb's order, except for numbers other than plain integers: *plain (when
 * not NULL) says whether there were none.
 */
static char *
jsonb_container_text(JsonbContainer *container, WireText kind, size_t *len, bool *plain)
{
	size_t		max_bytes;
	int64		max_values;
	StringInfoData buf;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	int64		values = 0;
	bool		raw_scalar = false;

	switch (kind)
	{
		case WIRE_INSTANCE:
			max_bytes = (size_t) flyt_max_instance_bytes;
			max_values = FLYT_MAX_INSTANCE_VALUES;
			break;
		case WIRE_HEADERS:
			max_bytes = FLYT_MAX_FLOW_HEADERS_BYTES;
			max_values = PG_INT64_MAX;
			break;
		default:
			max_bytes = MaxAllocSize - 1;
			max_values = PG_INT64_MAX;
			break;
	}

	if (plain != NULL)
		*plain = true;
	initStringInfo(&buf);
	it = JsonbIteratorInit(container);
	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		char		last;

		if (token == WJB_END_OBJECT || token == WJB_END_ARRAY)
		{
			if (!raw_scalar)
				appendStringInfoChar(&buf, token == WJB_END_OBJECT ? '}' : ']');
			continue;
		}

		/* a key, or a value that is not the first in its container */
		last = buf.len > 0 ? buf.data[buf.len - 1] : '[';
		if (last != '[' && last != '{' && last != ':')
			appendStringInfoChar(&buf, ',');

		switch (token)
		{
			case WJB_BEGIN_ARRAY:
				if (v.val.array.rawScalar)
					raw_scalar = true;	/* a scalar, wrapped by jsonb */
				else
				{
					values++;
					appendStringInfoChar(&buf, '[');
				}
				break;
			case WJB_BEGIN_OBJECT:
				values++;
				appendStringInfoChar(&buf, '{');
				break;
			case WJB_KEY:
				append_jsonb_scalar(&buf, &v, kind, max_bytes, NULL);
				appendStringInfoChar(&buf, ':');
				break;
			default:
				values++;
				append_jsonb_scalar(&buf, &v, kind, max_bytes, plain);
				break;
		}
		if (values > max_values)
			instance_too_many_values();
		if ((size_t) buf.len > max_bytes)
			wire_text_too_large(kind, max_bytes);
	}
	*len = buf.len;
	return buf.data;
}

/*
 * jsonb takes at most 6 times the bytes of the compact JSON text (an array
 * of one-digit numbers: a 4-byte entry and an 8-byte numeric for every
 * "0,").  With some margin, a jsonb argument of more than this many times a
 * text limit is over that limit: it is rejected before it is detoasted.
 */
#define FLYT_JSONB_TEXT_RATIO 8

/*
 * Flow headers given as jsonb (flyt_register_instance and
 * flyt_instance_dispatched): their compact text, validated by the consumer's
 * flyt_parse_flow_headers.
 */
void
flyt_flow_headers_from_jsonb(Datum jsonb, FlytFlowHeaders *headers)
{
	size_t		len;
	char	   *text;

	if (toast_raw_datum_size(jsonb) > (Size) FLYT_JSONB_TEXT_RATIO * FLYT_MAX_FLOW_HEADERS_BYTES)
		headers_too_large(FLYT_MAX_FLOW_HEADERS_BYTES, true);
	text = jsonb_to_wire_text(DatumGetJsonbP(jsonb), WIRE_HEADERS, &len);
	flyt_parse_flow_headers(text, len, headers);
}

/*
 * An instance given as jsonb (flyt_register_instance): its compact text,
 * validated by the consumer's flyt_parse_instance.  The text is built only
 * up to the limits, and freed once parsed.
 */
json_t *
flyt_instance_from_jsonb(Datum jsonb)
{
	size_t		len;
	char	   *text;
	json_t	   *json;

	if (toast_raw_datum_size(jsonb) > (Size) FLYT_JSONB_TEXT_RATIO * flyt_max_instance_bytes)
		instance_too_large(flyt_max_instance_bytes, true);
	text = jsonb_to_wire_text(DatumGetJsonbP(jsonb), WIRE_INSTANCE, &len);
	json = flyt_parse_instance(text, len);
	pfree(text);
	return json;
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

/* The compact JSON text of a jsonb value. */
char *
flyt_jsonb_to_text(Jsonb *jb, size_t *len)
{
	return jsonb_to_wire_text(jb, WIRE_STORED, len);
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

/* jsonb orders the keys of an object by length, then bytewise. */
static int
compare_jsonb_keys(const void *a, const void *b)
{
	const JsonbValue *ka = &((const JsonbPair *) a)->key;
	const JsonbValue *kb = &((const JsonbPair *) b)->key;

	if (ka->val.string.len != kb->val.string.len)
		return ka->val.string.len < kb->val.string.len ? -1 : 1;
	return memcmp(ka->val.string.val, kb->val.string.val, ka->val.string.len);
}

/*
 * The JsonbValue tree of a jansson value.  Strings and keys point into the
 * jansson tree; each object and array gets arrays of exactly its size (where
 * jsonb_in grows them from 4 and keeps a parse state per container).
 */
static void
json_to_jsonb_value(json_t *json, JsonbValue *out)
{
	check_stack_depth();
	switch (json_typeof(json))
	{
		case JSON_OBJECT:
			{
				size_t		n = json_object_size(json);
				size_t		i = 0;
				const char *key;
				json_t	   *v;

				out->type = jbvObject;
				out->val.object.nPairs = (int) n;
				out->val.object.pairs = n > 0 ? palloc(sizeof(JsonbPair) * n) : NULL;
				json_object_foreach(json, key, v)
				{
					JsonbPair  *pair = &out->val.object.pairs[i];

					pair->key.type = jbvString;
					pair->key.val.string.val = (char *) key;
					pair->key.val.string.len = (int) strlen(key);
					pair->order = (uint32) i;
					json_to_jsonb_value(v, &pair->value);
					i++;
				}
				/* jansson's keys are unique already */
				if (n > 1)
					qsort(out->val.object.pairs, n, sizeof(JsonbPair), compare_jsonb_keys);
				break;
			}
		case JSON_ARRAY:
			{
				size_t		n = json_array_size(json);

				out->type = jbvArray;
				out->val.array.nElems = (int) n;
				out->val.array.rawScalar = false;
				out->val.array.elems = n > 0 ? palloc(sizeof(JsonbValue) * n) : NULL;
				for (size_t i = 0; i < n; i++)
					json_to_jsonb_value(json_array_get(json, i), &out->val.array.elems[i]);
				break;
			}
		case JSON_STRING:
			if (memchr(json_string_value(json), '\0', json_string_length(json)) != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
						 errmsg("a JSON string with \\u0000 cannot be stored as jsonb")));
			out->type = jbvString;
			out->val.string.val = (char *) json_string_value(json);
			out->val.string.len = (int) json_string_length(json);
			break;
		case JSON_INTEGER:
			out->type = jbvNumeric;
			out->val.numeric = int64_to_numeric((int64) json_integer_value(json));
			break;
		case JSON_REAL:
			{
				/* the digits jansson writes, as jsonb_in of its text would read them */
				char	   *text = flyt_json_dump(json);

				out->type = jbvNumeric;
				out->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	   CStringGetDatum(text),
																	   ObjectIdGetDatum(InvalidOid),
																	   Int32GetDatum(-1)));
				pfree(text);
				break;
			}
		case JSON_TRUE:
		case JSON_FALSE:
			out->type = jbvBool;
			out->val.boolean = json_is_true(json);
			break;
		case JSON_NULL:
			out->type = jbvNull;
			break;
	}
}

/*
 * jansson → jsonb, for storing what was validated.  The JsonbValue tree lives
 * in a memory context of its own, freed as soon as the jsonb is built: a
 * generation context, as it is only ever freed as a whole, which does not
 * round chunks up to powers of two.
 */
Jsonb *
flyt_json_to_jsonb(json_t *json)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext tree_context = GenerationContextCreate(caller, "flyt_instance jsonb tree",
														 ALLOCSET_DEFAULT_SIZES);
	JsonbValue	root;
	Jsonb	   *jb;

	MemoryContextSwitchTo(tree_context);
	json_to_jsonb_value(json, &root);
	MemoryContextSwitchTo(caller);
	jb = JsonbValueToJsonb(&root);
	MemoryContextDelete(tree_context);
	return jb;
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

/*
 * "2026-01-05T10:00:00.000+00:00": a java.util.Date as the original's
 * ObjectMapper writes it (Jackson's StdDateFormat in UTC).
 */
static void
format_java_date(TimestampTz ts, char *buf, size_t buflen)
{
	size_t		len;

	flyt_format_timestamp(ts, buf, buflen);
	len = strlen(buf);
	Assert(len > 0 && buf[len - 1] == 'Z');
	snprintf(buf + len - 1, buflen - len + 1, "+00:00");
}

/*
 * The instance DTO, InstanceObjectDto as the original's Jackson writes it:
 * {"id", "valuePerKey", "objectCollectionPerKey", "createdAt"}.  Nested
 * objects are written as stored, {"valuePerKey", "objectCollectionPerKey"}:
 * the original also gives them the id and createdAt of their own database
 * rows, which no reader takes (id is read-only in the DTO).
 */
char *
flyt_instance_dto(int64 id, json_t *payload, TimestampTz created_at)
{
	json_t	   *dto = json_object();
	json_t	   *v;
	char		ts[48];
	char	   *text;

	format_java_date(created_at, ts, sizeof(ts));
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

/* InstanceFlowHeaders' fields in declaration order: the order Jackson writes them. */
static const char *const flow_header_fields[] = {
	"sourceApplicationId", "sourceApplicationIntegrationId",
	"sourceApplicationInstanceId", "fileIds", "correlationId",
	"integrationId", "instanceId", "configurationId", "archiveInstanceId"
};

/* A string that is a UUID in lower case (as Java's UUID writes it), others as they are. */
static void
append_uuid_or_string(StringInfo buf, const JsonbValue *v)
{
	char		text[37];
	pg_uuid_t	uuid;

	if (v->val.string.len == 36)
	{
		memcpy(text, v->val.string.val, 36);
		text[36] = '\0';
		if (parse_uuid(text, &uuid))
		{
			flyt_uuid_to_text(&uuid, text);
			appendStringInfo(buf, "\"%s\"", text);
			return;
		}
	}
	append_json_string(buf, v->val.string.val, v->val.string.len);
}

/*
 * Appends one member value of a stored jsonb object as jansson would write
 * it; false when only jansson can (a number other than a plain integer).
 */
static bool
append_member(StringInfo buf, const JsonbValue *v)
{
	bool		plain = true;

	if (v->type == jbvBinary)
	{
		size_t		len;
		char	   *text = jsonb_container_text(v->val.binary.data, WIRE_STORED, &len, &plain);

		appendBinaryStringInfo(buf, text, (int) len);
		pfree(text);
	}
	else
		append_jsonb_scalar(buf, v, WIRE_STORED, MaxAllocSize - 1, &plain);
	return plain;
}

static JsonbValue *
member(Jsonb *object, const char *key)
{
	return getKeyJsonValueFromContainer(&object->root, key, strlen(key), NULL);
}

/*
 * flyt_instance_dto of a stored instance, straight from its jsonb (no
 * jansson tree): the same bytes.  NULL when the instance holds a number
 * that only jansson writes right; the caller then goes through jansson.
 */
char *
flyt_instance_dto_from_jsonb(int64 id, Jsonb *payload, TimestampTz created_at)
{
	static const char *const parts[] = {"valuePerKey", "objectCollectionPerKey"};
	StringInfoData buf;
	char		ts[48];

	if (!JB_ROOT_IS_OBJECT(payload))
		return NULL;
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\":" INT64_FORMAT, id);
	for (int i = 0; i < (int) lengthof(parts); i++)
	{
		JsonbValue *v = member(payload, parts[i]);

		appendStringInfo(&buf, ",\"%s\":", parts[i]);
		if (v == NULL)
			appendStringInfoString(&buf, "{}");
		else if (!append_member(&buf, v))
		{
			pfree(buf.data);
			return NULL;
		}
	}
	format_java_date(created_at, ts, sizeof(ts));
	appendStringInfo(&buf, ",\"createdAt\":\"%s\"}", ts);
	return buf.data;
}

/*
 * flyt_flow_headers_text of stored flow headers, straight from their jsonb,
 * with correlationId replaced when correlation_id is not NULL: the same
 * bytes.  NULL when only jansson writes them right (a number other than a
 * plain integer, or fileIds not an array of strings).
 */
char *
flyt_flow_headers_text_from_jsonb(Jsonb *headers, const pg_uuid_t *correlation_id)
{
	StringInfoData buf;

	if (!JB_ROOT_IS_OBJECT(headers))
		return NULL;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < (int) lengthof(flow_header_fields); i++)
	{
		const char *field = flow_header_fields[i];
		JsonbValue *v = member(headers, field);
		bool		ok = true;
		char		text[37];

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfo(&buf, "\"%s\":", field);
		if (strcmp(field, "correlationId") == 0 && correlation_id != NULL)
		{
			flyt_uuid_to_text(correlation_id, text);
			appendStringInfo(&buf, "\"%s\"", text);
		}
		else if (v == NULL)
			appendStringInfoString(&buf, "null");
		else if (strcmp(field, "correlationId") == 0 && v->type == jbvString)
			append_uuid_or_string(&buf, v);
		else if (strcmp(field, "fileIds") == 0 && v->type == jbvBinary &&
				 JsonContainerIsArray(v->val.binary.data))
		{
			JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
			JsonbValue	e;
			JsonbIteratorToken token;
			bool		first = true;

			appendStringInfoChar(&buf, '[');
			while (ok && (token = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
			{
				if (token != WJB_ELEM)
					continue;
				if (e.type != jbvString)
					ok = false;
				else
				{
					if (!first)
						appendStringInfoChar(&buf, ',');
					first = false;
					append_uuid_or_string(&buf, &e);
				}
			}
			appendStringInfoChar(&buf, ']');
		}
		else
			ok = append_member(&buf, v);
		if (!ok)
		{
			pfree(buf.data);
			return NULL;
		}
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * The flyt.instance-flow-headers header as the original writes it: Jackson's
 * serialisation of fint-flyt-kafka's InstanceFlowHeaders, its nine fields in
 * declaration order, null where absent, UUIDs in lower case; fields the class
 * does not have are not written (the original never reads them either).
 * headers were validated by flyt_parse_flow_headers when they arrived.
 */
char *
flyt_flow_headers_text(json_t *headers)
{
	json_t	   *out = json_object();
	char	   *text;

	for (int i = 0; i < (int) lengthof(flow_header_fields); i++)
	{
		json_t	   *v = json_object_get(headers, flow_header_fields[i]);
		pg_uuid_t	uuid;
		char		buf[37];

		if (v == NULL)
			v = json_null();
		else if (json_is_string(v) && strcmp(flow_header_fields[i], "correlationId") == 0 &&
				 parse_uuid(json_string_value(v), &uuid))
		{
			flyt_uuid_to_text(&uuid, buf);
			v = json_string(buf);
		}
		else if (json_is_array(v) && strcmp(flow_header_fields[i], "fileIds") == 0)
		{
			json_t	   *ids = json_array();
			json_t	   *file_id;
			size_t		j;

			json_array_foreach(v, j, file_id)
			{
				if (json_is_string(file_id) && parse_uuid(json_string_value(file_id), &uuid))
				{
					flyt_uuid_to_text(&uuid, buf);
					json_array_append_new(ids, json_string(buf));
				}
				else
					json_array_append(ids, file_id);
			}
			v = ids;
		}
		else
			json_incref(v);
		json_object_set_new(out, flow_header_fields[i], v);
	}
	text = flyt_json_dump(out);
	json_decref(out);
	return text;
}

/*
 * n fresh random (version 4) UUIDs, from one draw of strong randomness:
 * what gen_random_uuid() gives, without its cost per call when a statement
 * needs thousands.
 */
void
flyt_new_uuids(pg_uuid_t *uuids, int n)
{
	if (!pg_strong_random(uuids, sizeof(pg_uuid_t) * n))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random UUIDs")));
	for (int i = 0; i < n; i++)
	{
		uuids[i].data[6] = (uuids[i].data[6] & 0x0f) | 0x40;
		uuids[i].data[8] = (uuids[i].data[8] & 0x3f) | 0x80;
	}
}

/* A fresh random (version 4) UUID. */
void
flyt_new_correlation_id(pg_uuid_t *uuid)
{
	flyt_new_uuids(uuid, 1);
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
