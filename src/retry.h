/*-------------------------------------------------------------------------
 *
 * retry.h
 *	  Retrying instances: flyt_retry and flyt_retry_batch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_RETRY_H
#define FLYT_RETRY_H

#include "postgres.h"

#include "nodes/execnodes.h"
#include "utils/uuid.h"

#include "flowreq.h"

typedef enum FlytRetryOutcome
{
	FLYT_RETRY_QUEUED,
	FLYT_RETRY_NOT_FOUND,
	FLYT_RETRY_NO_FLOW_HEADERS
} FlytRetryOutcome;

extern FlytRetryOutcome flyt_retry_instance(int64 instance_id,
											const char *requested_by,
											pg_uuid_t *correlation_id);
extern FlytRetryOutcome flyt_retry_one(int64 instance_id, const char *requested_by,
									   pg_uuid_t *correlation_id, FlytFlowOutcome *why);
extern void flyt_retry_fetch_flow_headers(const int64 *ids, int n, FlytFlowOutcome *why);
extern void flyt_report_retry_outcome(FlytRetryOutcome outcome, int64 instance_id,
									  FlytFlowOutcome why);
extern void flyt_retry_many(ReturnSetInfo *rsinfo, const Datum *ids, const bool *nulls, int n,
							bool for_http);

#endif							/* FLYT_RETRY_H */
