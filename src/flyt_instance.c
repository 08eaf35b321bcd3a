/*-------------------------------------------------------------------------
 *
 * flyt_instance.c
 *	  Entry point of the flyt_instance extension.
 *
 * flyt_instance is the FINT Flyt instance service inside PostgreSQL.  Each
 * concern has its own file:
 *
 *	guc.c		the flyt_instance.* settings
 *	duration.c	the duration syntax of those settings
 *	wire.c		the Kafka wire format (jansson)
 *	plans.c		SPI plans prepared once and kept
 *	store.c		registering, reading and deleting instances
 *	retry.c		flyt_retry and flyt_retry_batch
 *	history.c	the per-instance event history
 *	outbox.c	topic names and the transactional outbox
 *	cleanup.c	retention cleanup
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "guc.h"
#include "wire.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	flyt_wire_init();
	flyt_define_settings();
}
