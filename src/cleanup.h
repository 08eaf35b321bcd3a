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
	TimestampTz last_created_at;	/* of the last instance deleted;
									 * DT_NOBEGIN when none */
	int64		held_back;		/* expired, without flow headers, asked for
								 * less than flow_headers_timeout ago or not
								 * yet (no request slot was free) */
} FlytCleanupResult;

/* The worker's scheduled cleanup: one run, many batches. */
typedef struct FlytCleanupRun
{
	TimestampTz worker_started_at;
	TimestampTz last_started_at;	/* 0 before the first run */
	int64		run_id;			/* the flyt.cleanup_run row; 0 between runs */
	TimestampTz cutoff;
	int64		deleted;
	int64		deleted_without_event;
	int64		held_back;		/* of the run's last batch */
	TimestampTz again_at;		/* run again then for what was held back; 0: no */
} FlytCleanupRun;

#define FLYT_CLEANUP_RUNS_KEPT 1000

extern TimestampTz flyt_cleanup_cutoff(void);
extern void flyt_cleanup_recover(void);
extern TimestampTz flyt_cleanup_next_at(FlytCleanupRun *run);
extern void flyt_cleanup_step(FlytCleanupRun *run);
extern void flyt_cleanup_failed(FlytCleanupRun *run, const char *error);

#endif							/* FLYT_CLEANUP_H */
