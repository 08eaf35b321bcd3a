/*-------------------------------------------------------------------------
 *
 * fuzz_wire.c
 *	  A coverage-guided libFuzzer target for the parsing and validation of
 *	  what arrives from Kafka: the flow headers (header
 *	  flyt.instance-flow-headers) and the instance (the message value), by
 *	  the real src/wire.c, linked against pg_stubs.c.
 *
 * An input is the header text, the byte 0xFF (never part of UTF-8 JSON),
 * then the value text; an input without 0xFF is tried as both.  Besides
 * ASan and UBSan, these must hold:
 *
 *	- a rejection is an ERROR with SQLSTATE 22023 or 54000, errhidestmt, and
 *	  a short UTF-8 message without control characters (pg_stubs.c);
 *	- what is accepted can be stored: its JSON text has no \u0000, and the
 *	  JsonbValue tree flyt_json_to_jsonb builds is in jsonb's key order;
 *	- what is accepted is accepted again as it is stored and sent on (the
 *	  compact text, the canonical instance), unless that is over a limit
 *	  (the canonical form of an instance can be larger than the input);
 *	- the DTO of an accepted instance is a JSON object of its 4 fields.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include <stdint.h>

#include "fuzz_stubs.h"
#include "wire.h"

int			LLVMFuzzerInitialize(int *argc, char ***argv);
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * flyt_instance.max_instance_bytes (guc.c): small, so that inputs of the
 * fuzzer's length reach the limit (FUZZ_MAX_LEN in the Makefile is 8192).
 */
int			flyt_max_instance_bytes = 6000;

/* What the code between sigsetjmp and the end of a check is doing. */
typedef enum Phase
{
	PHASE_PARSE,				/* a rejection is fine */
	PHASE_REPARSE,				/* only a limit may reject it */
	PHASE_USE					/* no error at all */
} Phase;

static const char *
phase_name(Phase phase)
{
	return phase == PHASE_PARSE ? "parse" : phase == PHASE_REPARSE ? "reparse" : "use";
}

/* After an ERROR: was it one that phase allows? */
static void
check_rejection(const char *what, Phase phase)
{
	if (!fuzz_error.hide_stmt)
		fuzz_fatal("%s: error without errhidestmt: %s", what, fuzz_error.message);
	if (phase == PHASE_PARSE &&
		(fuzz_error.sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE ||
		 fuzz_error.sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED))
		return;
	if (phase == PHASE_REPARSE && fuzz_error.sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
		return;
	fuzz_fatal("%s: unexpected error in phase %s (%s:%d): %s", what, phase_name(phase),
			   fuzz_error.filename, fuzz_error.lineno, fuzz_error.message);
}

/* JSON text that jsonb can store: no \u0000 (jansson writes NUL so). */
static void
check_storable(const char *what, const char *text)
{
	for (const char *p = text; *p; p++)
	{
		if (*p != '\\')
			continue;
		if (strncmp(p, "\\u0000", 6) == 0)
			fuzz_fatal("%s accepted with \\u0000: %.300s", what, text);
		if (p[1] != '\0')
			p++;				/* the escaped character */
	}
}

static void
fuzz_headers(const char *text, size_t len)
{
	sigjmp_buf	jump;
	volatile Phase phase = PHASE_PARSE;
	FlytFlowHeaders headers;
	FlytFlowHeaders again;
	pg_uuid_t	uuid;
	char	   *dump;
	char	   *redump;

	fuzz_error_jump = &jump;
	if (sigsetjmp(jump, 0) != 0)
	{
		fuzz_error_jump = NULL;
		check_rejection("headers", phase);
		return;
	}
	flyt_parse_flow_headers(text, len, &headers);

	phase = PHASE_USE;
	dump = flyt_json_dump(headers.json);
	check_storable("headers", dump);
	(void) flyt_json_to_jsonb(headers.json);

	/* as the consumer stores them: with instanceId, sent on with each event */
	phase = PHASE_REPARSE;
	flyt_parse_flow_headers(dump, strlen(dump), &again);
	phase = PHASE_USE;
	redump = flyt_json_dump(again.json);
	if (strcmp(dump, redump) != 0)
		fuzz_fatal("headers change when read again:\n%.300s\n%.300s", dump, redump);
	json_object_set_new(again.json, "instanceId", json_integer(42));
	memset(&uuid, 0x5a, sizeof(uuid));
	flyt_set_correlation_id(again.json, &uuid);
	redump = flyt_json_dump(again.json);
	phase = PHASE_REPARSE;
	flyt_parse_flow_headers(redump, strlen(redump), &again);
	if (!again.has_instance_id || again.instance_id != 42 ||
		memcmp(&again.correlation_id, &uuid, sizeof(uuid)) != 0)
		fuzz_fatal("instanceId or correlationId lost: %.300s", redump);

	/* as they go on the wire (the original's form): they read back alike */
	phase = PHASE_USE;
	dump = flyt_flow_headers_text(again.json);
	phase = PHASE_REPARSE;
	flyt_parse_flow_headers(dump, strlen(dump), &again);
	if (!again.has_instance_id || again.instance_id != 42 ||
		memcmp(&again.correlation_id, &uuid, sizeof(uuid)) != 0)
		fuzz_fatal("instanceId or correlationId lost on the wire: %.300s", dump);
	fuzz_error_jump = NULL;
}

static void
fuzz_instance(const char *text, size_t len)
{
	sigjmp_buf	jump;
	volatile Phase phase = PHASE_PARSE;
	json_t	   *payload;
	json_t	   *again;
	json_t	   *dto;
	char	   *dto_text;
	json_error_t error;
	char	   *dump;
	char	   *redump;

	fuzz_error_jump = &jump;
	if (sigsetjmp(jump, 0) != 0)
	{
		fuzz_error_jump = NULL;
		check_rejection("instance", phase);
		return;
	}
	payload = flyt_parse_instance(text, len);

	phase = PHASE_USE;
	if (!json_is_object(payload) || json_object_size(payload) != 2 ||
		!json_is_object(json_object_get(payload, "valuePerKey")) ||
		!json_is_object(json_object_get(payload, "objectCollectionPerKey")))
		fuzz_fatal("instance accepted in a form that is not canonical");
	dump = flyt_json_dump(payload);
	check_storable("instance", dump);
	(void) flyt_json_to_jsonb(payload);

	dto_text = flyt_instance_dto(42, payload, 0);
	dto = json_loadb(dto_text, strlen(dto_text), 0, &error);
	if (dto == NULL || json_object_size(dto) != 4 ||
		json_integer_value(json_object_get(dto, "id")) != 42 ||
		!json_is_string(json_object_get(dto, "createdAt")))
		fuzz_fatal("DTO is not the 4 fields: %s", error.text);

	/* the canonical form is a fixpoint */
	phase = PHASE_REPARSE;
	again = flyt_parse_instance(dump, strlen(dump));
	phase = PHASE_USE;
	redump = flyt_json_dump(again);
	if (strcmp(dump, redump) != 0)
		fuzz_fatal("canonical instance changes when read again:\n%.300s\n%.300s", dump, redump);
	fuzz_error_jump = NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	flyt_wire_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		stack_base;
	const uint8_t *separator = memchr(data, 0xFF, size);

	fuzz_stack_base = &stack_base;
	if (separator != NULL)
	{
		size_t		headers_len = separator - data;

		fuzz_headers((const char *) data, headers_len);
		fuzz_instance((const char *) separator + 1, size - headers_len - 1);
	}
	else
	{
		fuzz_headers((const char *) data, size);
		fuzz_instance((const char *) data, size);
	}
	fuzz_arena_reset();
	return 0;
}
