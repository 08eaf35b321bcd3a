/*-------------------------------------------------------------------------
 *
 * pg_stubs.c
 *	  Just enough of the PostgreSQL backend for src/wire.c to run inside a
 *	  libFuzzer process (fuzz_wire.c).
 *
 * Memory: palloc is malloc, with every chunk kept on a list (the arena) that
 * fuzz_arena_reset frees after each input, as a memory context reset would.
 * Errors: ereport(ERROR) records the error and longjmps back to the entry
 * point (fuzz_error_jump); lower levels are dropped.  The error is checked
 * on the way, as flyt_instance promises: errhidestmt set, and a message
 * that is short, UTF-8 and free of control characters (it goes to the log).
 *
 * What the fuzzed functions never reach (jsonb iteration, detoasting,
 * random numbers) aborts.  The jsonb builder (flyt_json_to_jsonb) is
 * exercised up to PostgreSQL's JsonbValueToJsonb, which is replaced by a
 * check of the JsonbValue tree it would convert: keys in jsonb's order
 * (length, then bytes), no duplicates, no \u0000.
 *
 * StringInfo, UTF-8 verification, snprintf and qsort are PostgreSQL's own,
 * from libpgcommon.a and libpgport.a.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "mb/pg_wchar.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "fuzz_stubs.h"

/* --- memory --------------------------------------------------------------- */

typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	/* 16-byte aligned payload follows */
	max_align_t align[FLEXIBLE_ARRAY_MEMBER];
} Chunk;

static Chunk arena = {&arena, &arena, 0};
static size_t arena_bytes = 0;

/* A context pointer for code that switches contexts; palloc ignores it. */
static char dummy_context_storage[64];
MemoryContext CurrentMemoryContext = (MemoryContext) dummy_context_storage;

static Chunk *
chunk_of(void *pointer)
{
	return (Chunk *) ((char *) pointer - offsetof(Chunk, align));
}

static void
chunk_link(Chunk *c)
{
	c->next = arena.next;
	c->prev = &arena;
	arena.next->prev = c;
	arena.next = c;
}

static void
chunk_unlink(Chunk *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
}

void *
palloc(Size size)
{
	Chunk	   *c;

	if (size > MaxAllocSize)
		fuzz_fatal("palloc of %zu bytes: more than MaxAllocSize", (size_t) size);
	c = malloc(offsetof(Chunk, align) + size);
	if (c == NULL)
		fuzz_fatal("out of memory");
	c->size = size;
	chunk_link(c);
	arena_bytes += size;
	return c->align;
}

void *
palloc0(Size size)
{
	void	   *p = palloc(size);

	memset(p, 0, size);
	return p;
}

void
pfree(void *pointer)
{
	Chunk	   *c = chunk_of(pointer);

	chunk_unlink(c);
	arena_bytes -= c->size;
	free(c);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *c = chunk_of(pointer);
	Chunk	   *n;

	if (size > MaxAllocSize)
		fuzz_fatal("repalloc of %zu bytes: more than MaxAllocSize", (size_t) size);
	chunk_unlink(c);
	arena_bytes -= c->size;
	n = realloc(c, offsetof(Chunk, align) + size);
	if (n == NULL)
		fuzz_fatal("out of memory");
	n->size = size;
	chunk_link(n);
	arena_bytes += size;
	return n->align;
}

char *
pstrdup(const char *in)
{
	return pnstrdup(in, strlen(in));
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

size_t
fuzz_arena_bytes(void)
{
	return arena_bytes;
}

void
fuzz_arena_reset(void)
{
	while (arena.next != &arena)
	{
		Chunk	   *c = arena.next;

		chunk_unlink(c);
		free(c);
	}
	arena_bytes = 0;
	CurrentMemoryContext = (MemoryContext) dummy_context_storage;
}

MemoryContext
GenerationContextCreate(MemoryContext parent, const char *name, Size minContextSize,
						Size initBlockSize, Size maxBlockSize)
{
	static char generation_storage[64];

	return (MemoryContext) generation_storage;
}

void
MemoryContextDelete(MemoryContext context)
{
	/* its chunks go with the arena */
}

/* --- errors ----------------------------------------------------------------- */

FuzzError fuzz_error;
sigjmp_buf *fuzz_error_jump = NULL;

static void
append_message(char *buf, size_t size, const char *fmt, va_list args)
{
	size_t		len = strlen(buf);

	if (len + 1 < size)
		vsnprintf(buf + len, size - len, fmt, args);
}

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;
	if (fuzz_error.active)
		fuzz_fatal("error while reporting an error: %s", fuzz_error.message);
	memset(&fuzz_error, 0, sizeof(fuzz_error));
	fuzz_error.active = true;
	fuzz_error.elevel = elevel;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

int
errcode(int sqlerrcode)
{
	fuzz_error.sqlerrcode = sqlerrcode;
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	append_message(fuzz_error.message, sizeof(fuzz_error.message), fmt, args);
	va_end(args);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	append_message(fuzz_error.message, sizeof(fuzz_error.message), fmt, args);
	va_end(args);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	append_message(fuzz_error.detail, sizeof(fuzz_error.detail), fmt, args);
	va_end(args);
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

int
errhidestmt(bool hide_stmt)
{
	fuzz_error.hide_stmt = hide_stmt;
	return 0;
}

/* Short, UTF-8, no control characters: fit for a line of the server log. */
static void
check_log_text(const char *what, const char *text)
{
	size_t		len = strlen(text);

	if (len >= FUZZ_MAX_MESSAGE)
		fuzz_fatal("%s of %zu bytes or more: %.200s", what, len, text);
	if (pg_encoding_verifymbstr(PG_UTF8, text, (int) len) != (int) len)
		fuzz_fatal("%s is not UTF-8: %s", what, text);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) text[i] < 0x20)
			fuzz_fatal("%s has control character 0x%02x: %s", what, text[i], text);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	fuzz_error.filename = filename;
	fuzz_error.lineno = lineno;
	if (fuzz_error.message[0] == '\0')
		fuzz_fatal("error without a message at %s:%d", filename, lineno);
	check_log_text("error message", fuzz_error.message);
	check_log_text("error detail", fuzz_error.detail);
	if (fuzz_error_jump == NULL)
		fuzz_fatal("error outside the fuzzed call: %s", fuzz_error.message);
	fuzz_error.active = false;
	siglongjmp(*fuzz_error_jump, 1);
}

/* The backend's check with a 2 MB limit (max_stack_depth's default). */
char	   *fuzz_stack_base = NULL;

void
check_stack_depth(void)
{
	char		here;

	if (fuzz_stack_base != NULL && fuzz_stack_base - &here > 2 * 1024 * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_STATEMENT_TOO_COMPLEX),
				 errmsg("stack depth limit exceeded")));
}

void
fuzz_fatal(const char *fmt,...)
{
	va_list		args;

	fprintf(stderr, "fuzz_wire: ");
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fprintf(stderr, "\n");
	abort();
}

/* --- the jsonb builder's last step, checked instead of done --------------- */

static void
check_jsonb_value(const JsonbValue *v, int depth)
{
	if (depth > 10000)
		fuzz_fatal("JsonbValue tree deeper than 10000");
	switch (v->type)
	{
		case jbvObject:
			for (int i = 0; i < v->val.object.nPairs; i++)
			{
				const JsonbValue *k = &v->val.object.pairs[i].key;

				if (k->type != jbvString)
					fuzz_fatal("object key of type %d", (int) k->type);
				if (memchr(k->val.string.val, '\0', k->val.string.len) != NULL)
					fuzz_fatal("object key with NUL");
				if (i > 0)
				{
					const JsonbValue *p = &v->val.object.pairs[i - 1].key;

					if (p->val.string.len > k->val.string.len ||
						(p->val.string.len == k->val.string.len &&
						 memcmp(p->val.string.val, k->val.string.val, k->val.string.len) >= 0))
						fuzz_fatal("object keys out of jsonb's order or duplicated");
				}
				check_jsonb_value(&v->val.object.pairs[i].value, depth + 1);
			}
			break;
		case jbvArray:
			if (v->val.array.rawScalar)
				fuzz_fatal("raw scalar inside a tree");
			for (int i = 0; i < v->val.array.nElems; i++)
				check_jsonb_value(&v->val.array.elems[i], depth + 1);
			break;
		case jbvString:
			if (memchr(v->val.string.val, '\0', v->val.string.len) != NULL)
				fuzz_fatal("string with NUL");
			break;
		case jbvNumeric:
		case jbvBool:
		case jbvNull:
			break;
		default:
			fuzz_fatal("JsonbValue of type %d", (int) v->type);
	}
}

Jsonb *
JsonbValueToJsonb(JsonbValue *val)
{
	check_jsonb_value(val, 0);
	return NULL;
}

/* Numbers are not looked at: any non-NULL Numeric will do. */
static char dummy_numeric[16];

Numeric
int64_to_numeric(int64 val)
{
	return (Numeric) dummy_numeric;
}

Datum
DirectFunctionCall3Coll(PGFunction func, Oid collation, Datum arg1, Datum arg2, Datum arg3)
{
	if (func != numeric_in)
		fuzz_fatal("DirectFunctionCall3Coll of an unexpected function");
	return PointerGetDatum(dummy_numeric);
}

struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	return datum;				/* DatumGetNumeric of the above */
}

Datum
numeric_in(PG_FUNCTION_ARGS)
{
	fuzz_fatal("numeric_in called");
}

/* 2026-11-22 10:15:30.123 UTC, for the DTO's createdAt. */
int
timestamp2tm(Timestamp dt, int *tzp, struct pg_tm *tm, fsec_t *fsec, const char **tzn, pg_tz *attimezone)
{
	memset(tm, 0, sizeof(*tm));
	tm->tm_year = 2026;
	tm->tm_mon = 11;
	tm->tm_mday = 22;
	tm->tm_hour = 10;
	tm->tm_min = 15;
	tm->tm_sec = 30;
	*fsec = 123000;
	return 0;
}

/* --- never reached by the fuzzed functions ------------------------------------ */

Datum
DirectFunctionCall1Coll(PGFunction func, Oid collation, Datum arg1)
{
	fuzz_fatal("DirectFunctionCall1Coll called");
}

Datum
numeric_out(PG_FUNCTION_ARGS)
{
	fuzz_fatal("numeric_out called");
}

JsonbIterator *
JsonbIteratorInit(JsonbContainer *container)
{
	fuzz_fatal("JsonbIteratorInit called");
}

JsonbIteratorToken
JsonbIteratorNext(JsonbIterator **it, JsonbValue *val, bool skipNested)
{
	fuzz_fatal("JsonbIteratorNext called");
}

/*
 * A link-time stand-in, complete as it is, like the stubs around it: wire.c
 * writes stored instances and flow headers straight from jsonb
 * (flyt_instance_dto_from_jsonb, flyt_flow_headers_text_from_jsonb), which
 * the fuzzer never calls; it drives only the parsing of messages, which
 * never looks a key up.  A call would mean the harness reached code it does
 * not model, so the run stops there.
 */
JsonbValue *
getKeyJsonValueFromContainer(JsonbContainer *container, const char *keyVal, int keyLen,
							 JsonbValue *res)
{
	fuzz_fatal("getKeyJsonValueFromContainer called");
}

Size
toast_raw_datum_size(Datum value)
{
	fuzz_fatal("toast_raw_datum_size called");
}

bool
pg_strong_random(void *buf, size_t len)
{
	fuzz_fatal("pg_strong_random called");
}
