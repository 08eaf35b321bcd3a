/*-------------------------------------------------------------------------
 *
 * deadletter.h
 *	  Dead letters an operator can act on: list, redrive, discard.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_DEADLETTER_H
#define FLYT_DEADLETTER_H

#include "postgres.h"

#include "pg_jansson.h"

#include "fmgr.h"
#include "lib/stringinfo.h"

/* What a redrive or a discard of one dead letter came to. */
typedef enum FlytDeadLetterOutcome
{
	FLYT_DL_NOT_FOUND,
	FLYT_DL_REDRIVEN,			/* queued again, or applied */
	FLYT_DL_FAILED,				/* applied again and failed: still dead */
	FLYT_DL_DISCARDED,
	FLYT_DL_ALREADY_REDRIVEN,
	FLYT_DL_ALREADY_DISCARDED,
	FLYT_DL_NOT_REDRIVABLE		/* a reply, or its content was not recorded */
} FlytDeadLetterOutcome;

extern const char *flyt_dead_letter_outcome_name(FlytDeadLetterOutcome outcome);
extern FlytDeadLetterOutcome flyt_dead_letter_redrive_one(int64 id, const char *by);
extern FlytDeadLetterOutcome flyt_dead_letter_discard_one(int64 id, const char *by);
extern Datum flyt_dead_letters_srf(FunctionCallInfo fcinfo);

/* For flyt_status() and flyt_metrics(); the caller is not connected to SPI. */
extern json_t *flyt_dead_letter_status(void);
extern void flyt_dead_letter_metrics(StringInfo buf);

#endif							/* FLYT_DEADLETTER_H */
