/*
 * hannoydistance.c
 *	  The SQL distance functions behind hannoy's operators.  They call the
 *	  core's kernels, the same ones the index uses, so an index scan and a
 *	  sequential scan report identical distances (DESIGN.md "Exact distances").
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/array.h"
#include "utils/varbit.h"

#include "hannoy_am.h"

/*
 * sql_distance is the body of every SQL distance function: it checks the two
 * values as the metric's element type requires and returns their distance.
 */
static Datum
sql_distance(FunctionCallInfo fcinfo, HannoyMetric metric)
{
	if (hannoy_metric_info(metric).element == HANNOY_ELEMENT_BIT)
	{
		VarBit *a = PG_GETARG_VARBIT_P(0);
		VarBit *b = PG_GETARG_VARBIT_P(1);

		if (VARBITLEN(a) != VARBITLEN(b))
			ereport(ERROR,
			        (errcode(ERRCODE_DATA_EXCEPTION),
			         errmsg("different bit string lengths %d and %d", VARBITLEN(a), VARBITLEN(b))));
		if (VARBITLEN(a) > HANNOY_MAX_BITS)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("bit string has %d bits, more than the maximum of %d",
			                       VARBITLEN(a), HANNOY_MAX_BITS)));
		PG_RETURN_FLOAT8(hannoy_distance(metric, VARBITS(a), VARBITS(b), (uint32) VARBITLEN(a)));
	}
	else
	{
		ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
		ArrayType *b = PG_GETARG_ARRAYTYPE_P(1);

		HannoyCheckVectorArray(a, "vector");
		HannoyCheckVectorArray(b, "vector");
		if (ARR_DIMS(a)[0] != ARR_DIMS(b)[0])
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("different vector dimensions %d and %d", ARR_DIMS(a)[0],
			                       ARR_DIMS(b)[0])));
		PG_RETURN_FLOAT8(
		    hannoy_distance(metric, ARR_DATA_PTR(a), ARR_DATA_PTR(b), (uint32) ARR_DIMS(a)[0]));
	}
}

/* One SQL function per row of the metric table, named by its SQLFUNC column. */
#define HANNOY_SQL_DISTANCE(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)             \
	PG_FUNCTION_INFO_V1(SQLFUNC);                                                                  \
	Datum SQLFUNC(PG_FUNCTION_ARGS)                                                                \
	{                                                                                              \
		return sql_distance(fcinfo, HANNOY_METRIC_##NAME);                                         \
	}
HANNOY_METRICS(HANNOY_SQL_DISTANCE)
#undef HANNOY_SQL_DISTANCE
