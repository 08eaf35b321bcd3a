/*-------------------------------------------------------------------------
 *
 * admin.h
 *	  Provisioning of the worker's topics: "create or modify", as the Java
 *	  service's KafkaAdmin.createOrModifyTopics did.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_ADMIN_H
#define FLYT_ADMIN_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "datatype/timestamp.h"

#include "kafka.h"

typedef struct FlytAdmin
{
	/* the settings the last provisioning was made with */
	int64		retention_ms;
	int			error_event_format;
	int			replication_factor;
	bool		warned;			/* the admin API failure was reported */
	TimestampTz retry_at;		/* provision again then (0: no need) */
	int64		asked;			/* number of the last CreateTopics sent */
} FlytAdmin;

extern void flyt_admin_provision(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue);
extern bool flyt_admin_outdated(const FlytAdmin *admin);
extern void flyt_admin_serve(FlytAdmin *admin, FlytKafka *kafka);

#endif							/* FLYT_ADMIN_H */
