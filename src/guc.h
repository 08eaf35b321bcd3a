/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  The flyt_instance.* settings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_GUC_H
#define FLYT_GUC_H

#include "postgres.h"

extern char *flyt_database;
extern char *flyt_kafka_bootstrap_servers;
extern char *flyt_kafka_config;
extern char *flyt_org_id;
extern char *flyt_domain_context;
extern char *flyt_application_id;
extern int	flyt_time_to_keep_instance_in_days;
extern int64 flyt_cleanup_interval_ms;
extern int64 flyt_cleanup_initial_delay_ms;
extern int	flyt_cleanup_batch_size;
extern int	flyt_redelivery_max_no;
extern int	flyt_redelivery_millis;
extern int	flyt_max_in_flight;
extern int	flyt_max_in_flight_memory_kb;
extern int	flyt_consumer_assignment_grace_s;
extern char *flyt_authorized_org_id_role_pairs;
extern int	flyt_max_instance_bytes;
extern int	flyt_topic_replication_factor;
extern int	flyt_flow_headers_timeout_ms;

/* flyt_instance.error_event_format */
typedef enum FlytErrorEventFormat
{
	FLYT_ERRORS_LEGACY,			/* instance-registration-error, instance-retry-request-error */
	FLYT_ERRORS_INSTANCE_ERROR	/* instance-error with InstanceErrorEvent */
} FlytErrorEventFormat;

extern int	flyt_error_event_format;

/* One property of kafka_config; false stops the walk. */
typedef bool (*FlytKafkaPropertyFn) (const char *key, const char *value, void *arg);

extern bool flyt_kafka_config_foreach(const char *config, FlytKafkaPropertyFn fn, void *arg);
extern char *flyt_kafka_config_get(const char *key);
extern void flyt_define_settings(void);
extern int64 flyt_topic_retention_ms(void);

#endif							/* FLYT_GUC_H */
