/*-------------------------------------------------------------------------
 *
 * admin.h
 *	  Provisioning of the produced topics: "create or modify".
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_ADMIN_H
#define FLYT_ADMIN_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

typedef struct FlytAdmin
{
	int64		retention_ms;	/* what was last asked for */
	bool		warned;			/* the admin API failure was reported */
} FlytAdmin;

extern void flyt_admin_provision(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue);
extern void flyt_admin_serve(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue);

#endif							/* FLYT_ADMIN_H */
