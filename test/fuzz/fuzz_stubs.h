/*-------------------------------------------------------------------------
 *
 * fuzz_stubs.h
 *	  What pg_stubs.c offers fuzz_wire.c: the arena behind palloc, the error
 *	  that ereport(ERROR) left, and where it jumps to.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_FUZZ_STUBS_H
#define FLYT_FUZZ_STUBS_H

#include "postgres.h"

#include <setjmp.h>

/* Longest error message or detail the log may get from wire.c. */
#define FUZZ_MAX_MESSAGE 512

typedef struct FuzzError
{
	bool		active;			/* between errstart and errfinish */
	int			elevel;
	int			sqlerrcode;
	bool		hide_stmt;
	const char *filename;
	int			lineno;
	char		message[FUZZ_MAX_MESSAGE * 2];
	char		detail[FUZZ_MAX_MESSAGE * 2];
} FuzzError;

/* The last error raised. */
extern FuzzError fuzz_error;

/* Where ereport(ERROR) jumps to; NULL outside a fuzzed call. */
extern sigjmp_buf *fuzz_error_jump;

/* check_stack_depth measures from here. */
extern char *fuzz_stack_base;

extern void fuzz_arena_reset(void);
extern size_t fuzz_arena_bytes(void);
extern void fuzz_fatal(const char *fmt,...) pg_attribute_printf(1, 2) pg_attribute_noreturn();

#endif							/* FLYT_FUZZ_STUBS_H */
