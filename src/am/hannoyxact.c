/*
 * hannoyxact.c
 *	  The transaction callbacks: queued inserts are applied before commit
 *	  and prepare (DESIGN.md "Insert"), and the sidecar removals that wait
 *	  for a (sub)transaction's end are carried out (DESIGN.md "Lifecycle").
 */
#include "postgres.h"

#include "access/xact.h"

#include "hannoy_am.h"

/*
 * HannoyXactCallback applies queued inserts before commit or prepare, and
 * ends the transaction's sidecar removals and insert queues.
 */
void
HannoyXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			HannoyFlushAllQueues();
			HannoyLifecyclePreCommit();
			break;
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			HannoyFlushAllQueues();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			HannoyLifecycleAtEnd(false, false);
			HannoyQueueAtXactEnd();
			HannoyReleaseDirtyMarkers();
			break;
		case XACT_EVENT_COMMIT:
			HannoyLifecycleAtEnd(true, false);
			HannoyQueueAtXactEnd();
			HannoyReleaseDirtyMarkers();
			break;
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			HannoyLifecycleAtEnd(true, true);
			HannoyQueueAtXactEnd();
			HannoyReleaseDirtyMarkers();
			break;
	}
}

/*
 * HannoySubXactCallback removes sidecars created inside a subtransaction
 * that aborts and forgets the drops it asked for, or hands both to the
 * parent of one that commits.
 */
void
HannoySubXactCallback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
                      void *arg)
{
	HannoyLifecycleSubXact(event, mySubid, parentSubid);
}
