/*-------------------------------------------------------------------------
 *
 * history.h
 *	  The event history of instances (flyt.instance_event).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_HISTORY_H
#define FLYT_HISTORY_H

#include "postgres.h"

#include "utils/uuid.h"

/* PostgREST's anonymous role, created by the extension. */
#define FLYT_WEB_ROLE "flyt_web"

/* Times a version conflict is retried before the change fails. */
#define FLYT_MAX_VERSION_ATTEMPTS 10

extern void flyt_append_events_of_new(Datum *instance_ids, int n, const char *event_type,
									  const char *requested_by, pg_uuid_t **correlation_ids);
extern int	flyt_append_event(int64 instance_id, const char *event_type,
							  const char *requested_by,
							  const pg_uuid_t *correlation_id,
							  const char *detail);
extern char *flyt_requested_by(void);

#endif							/* FLYT_HISTORY_H */
