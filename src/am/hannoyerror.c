/*
 * hannoyerror.c
 *	  Errors speak PostgreSQL: core statuses become ereports with a SQLSTATE
 *	  that says what kind of failure it was, and an unusable index is
 *	  reported the same way everywhere (DESIGN.md "Unusable sidecars").
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/rel.h"

#include "hannoy_am.h"

/*
 * The SQLSTATE of an operating system error behind a storage failure, as
 * PostgreSQL's own file accesses report it (errcode_for_file_access).
 */
static int
sqlstate_of_errno(int sys_errno)
{
	switch (sys_errno)
	{
		case EPERM:
		case EACCES:
		case EROFS:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		case ENOENT:
			return ERRCODE_UNDEFINED_FILE;
		case ENOSPC:
			return ERRCODE_DISK_FULL;
		case EMFILE:
		case ENFILE:
			return ERRCODE_INSUFFICIENT_RESOURCES;
		case ENOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		default:
			return ERRCODE_IO_ERROR;
	}
}

/*
 * HannoyReportError turns a core status into an ereport(ERROR) with a
 * SQLSTATE that says what kind of failure it was.
 */
void
HannoyReportError(HannoyStatus status, const HannoyError *err, Relation index)
{
	int         code;
	const char *hint = NULL;
	char        message[sizeof(err->message)];

	strlcpy(message, err->message, sizeof(message));
	switch (status)
	{
		case HANNOY_ERR_NOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case HANNOY_ERR_STORAGE:
			code = sqlstate_of_errno(err->sys_errno);
			if (err->sys_errno == ENOSPC)
				hint = "Free space on the file system that holds the data directory's hannoy "
				       "directory.";
			break;
		case HANNOY_ERR_MAP_FULL:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			hint = "Retry the statement: the map grows when no read transaction of this "
			       "backend holds the sidecar.";
			break;
		case HANNOY_ERR_CORRUPT:
		case HANNOY_ERR_NOT_FOUND:
			code = ERRCODE_INDEX_CORRUPTED;
			hint = "REINDEX the index to rebuild its sidecar.";
			break;
		case HANNOY_ERR_INVALID:
			code = ERRCODE_DATA_EXCEPTION;
			break;
		case HANNOY_ERR_LIMIT:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			break;
		default:
			code = ERRCODE_INTERNAL_ERROR;
			break;
	}
	if (index != NULL)
		ereport(ERROR, (errcode(code),
		                errmsg("hannoy index \"%s\": %s", RelationGetRelationName(index), message),
		                hint ? errhint("%s", hint) : 0));
	ereport(ERROR, (errcode(code), errmsg("hannoy: %s", message), hint ? errhint("%s", hint) : 0));
}

/*
 * HannoyReportUnusable reports that 'index' cannot be used because of 'why'
 * at 'elevel', with the REINDEX hint.  'consequence' (NULL for an ERROR)
 * says what happens instead ("skipping it").
 */
void
HannoyReportUnusable(Relation index, const char *why, int elevel, const char *consequence)
{
	const char *name = RelationGetRelationName(index);

	if (why == NULL)
		why = "unknown reason";
	if (consequence == NULL)
		ereport(elevel, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                 errmsg("hannoy index \"%s\" cannot be used: %s", name, why),
		                 errhint("REINDEX INDEX %s;", quote_identifier(name))));
	else
		ereport(elevel,
		        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		         errmsg("hannoy index \"%s\" cannot be used (%s): %s", name, why, consequence),
		         errhint("REINDEX INDEX %s;", quote_identifier(name))));
}
