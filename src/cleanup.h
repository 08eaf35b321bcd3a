/*-------------------------------------------------------------------------
 *
 * cleanup.h
 *	  Retention cleanup of instances and their history.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_CLEANUP_H
#define FLYT_CLEANUP_H

#include "postgres.h"

#include "datatype/timestamp.h"

typedef struct FlytCleanupResult
{
	int64		deleted;		/* instances deleted */
	int64		deleted_without_event;	/* of which had no flow headers */
	int64		history_purged; /* history rows whose window had passed */
} FlytCleanupResult;

extern TimestampTz flyt_cleanup_cutoff(void);
extern void flyt_cleanup_batch(TimestampTz cutoff, int64 max_rows,
							   FlytCleanupResult *result);

#endif							/* FLYT_CLEANUP_H */
