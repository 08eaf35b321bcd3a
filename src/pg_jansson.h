/*-------------------------------------------------------------------------
 *
 * pg_jansson.h
 *	  jansson, included so that it can live beside PostgreSQL's headers.
 *
 * PostgreSQL's utils/fmgrprotos.h declares the SQL function json_object(),
 * and jansson declares its own json_object().  Include this header right
 * after postgres.h in every file that uses jansson: it pulls in fmgrprotos.h
 * with PostgreSQL's symbol renamed, so later inclusions of utils/builtins.h
 * are no-ops, and then jansson.  The same clash exists at run time, see
 * flyt_json_new_object below.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_PG_JANSSON_H
#define FLYT_PG_JANSSON_H

#include "postgres.h"

#define json_object pg_fmgr_json_object
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#undef json_object

#include <jansson.h>

/*
 * The postgres executable exports its json_object() too, and the dynamic
 * linker binds our calls to it, not to jansson's.  Make new objects through
 * json_pack instead; "json_object()" in our code means this.
 */
static inline json_t *
flyt_json_new_object(void)
{
	return json_pack("{}");
}

#define json_object() flyt_json_new_object()

#endif							/* FLYT_PG_JANSSON_H */
