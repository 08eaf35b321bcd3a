/*-------------------------------------------------------------------------
 *
 * duration.h
 *	  Parsing of the duration strings used by flyt_instance settings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_DURATION_H
#define FLYT_DURATION_H

#include "postgres.h"

/* The accepted forms, for error messages and hints. */
#define FLYT_DURATION_FORMS "a number with a unit ms, s, m, h or d (such as 30s, 96h or 4d) or an ISO-8601 duration (such as P4D, PT96H or PT30M)"

extern bool flyt_parse_duration(const char *text, int64 *milliseconds,
								const char **problem);
extern bool flyt_parse_milliseconds(const char *text, int64 *milliseconds,
									const char **problem);

#endif							/* FLYT_DURATION_H */
