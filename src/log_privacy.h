/*-------------------------------------------------------------------------
 *
 * log_privacy.h
 *	  Keeping the Kafka secrets out of the server log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_LOG_PRIVACY_H
#define FLYT_LOG_PRIVACY_H

#include "postgres.h"

extern void flyt_log_privacy_init(void);

#endif							/* FLYT_LOG_PRIVACY_H */
