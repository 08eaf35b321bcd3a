/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The flyt_instance background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_WORKER_H
#define FLYT_WORKER_H

#include "postgres.h"

extern void flyt_worker_register(void);
extern PGDLLEXPORT void flyt_worker_main(Datum arg);

#endif							/* FLYT_WORKER_H */
