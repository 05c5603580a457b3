/*
 * hannoyvector.c
 *	  SQL values to vectors: checks a real[] or bit value as its metric's
 *	  element type requires and hands out its raw elements.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/rel.h"
#include "utils/varbit.h"

#include "hannoy_am.h"

/*
 * HannoyCheckVectorArray checks that a real[] is a usable vector: one
 * dimension, not empty, no NULL elements, finite values, at most
 * HANNOY_MAX_DIMS elements.
 */
void
HannoyCheckVectorArray(ArrayType *array, const char *what)
{
	int     n;
	float4 *v;

	if (ARR_ELEMTYPE(array) != FLOAT4OID)
		ereport(ERROR,
		        (errcode(ERRCODE_DATATYPE_MISMATCH), errmsg("%s must be a real[] array", what)));
	if (ARR_NDIM(array) == 0)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION), errmsg("%s must not be empty", what)));
	if (ARR_NDIM(array) != 1)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must be a one-dimensional array", what),
		                errdetail("The array has %d subscripts.", ARR_NDIM(array))));
	if (ARR_HASNULL(array) && array_contains_nulls(array))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
		                errmsg("%s must not contain NULL elements", what)));
	n = ARR_DIMS(array)[0];
	if (n > HANNOY_MAX_DIMS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("%s has %d dimensions, more than the maximum of %d", what, n,
		                       HANNOY_MAX_DIMS)));
	v = (float4 *) ARR_DATA_PTR(array);
	for (int i = 0; i < n; i++)
	{
		if (isnan(v[i]))
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("%s must not contain NaN (element %d)", what, i + 1)));
		if (isinf(v[i]))
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("%s must not contain infinity (element %d)", what, i + 1)));
	}
}

/*
 * HannoyDatumToVector checks an indexed value (query false) or an ORDER BY
 * argument (query true) of 'index' and returns a pointer to its raw vector
 * (float4 elements or bit bytes), valid as long as the detoasted value.
 * 'expected_dims' 0 accepts any length.  A wrong length is reported the way
 * the operator reports it for queries, and against the index for rows.
 */
void *
HannoyDatumToVector(Relation index, Datum value, HannoyMetric metric, uint32 expected_dims,
                    bool query, uint32 *dims, bool *is_zero)
{
	*is_zero = false;
	if (hannoy_metric_info(metric).element == HANNOY_ELEMENT_BIT)
	{
		VarBit *bits = DatumGetVarBitP(value);
		int     len = VARBITLEN(bits);

		if (len == 0)
			ereport(ERROR,
			        (errcode(ERRCODE_DATA_EXCEPTION), errmsg("bit string must not be empty")));
		if (len > HANNOY_MAX_BITS)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("bit string has %d bits, more than the maximum of %d", len,
			                       HANNOY_MAX_BITS)));
		if (expected_dims != 0 && (uint32) len != expected_dims)
		{
			if (query)
				ereport(ERROR,
				        (errcode(ERRCODE_DATA_EXCEPTION),
				         errmsg("different bit string lengths %u and %d", expected_dims, len)));
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("expected %u bits, not %d", expected_dims, len),
			                errdetail("Index \"%s\" holds bit strings of %u bits.",
			                          RelationGetRelationName(index), expected_dims)));
		}
		*dims = (uint32) len;
		return VARBITS(bits);
	}
	else
	{
		ArrayType *array = DatumGetArrayTypeP(value);
		float4    *v;
		int        n;

		HannoyCheckVectorArray(array, "vector");
		n = ARR_DIMS(array)[0];
		if (expected_dims != 0 && (uint32) n != expected_dims)
		{
			if (query)
				ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
				                errmsg("different vector dimensions %u and %d", expected_dims, n)));
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("expected %u dimensions, not %d", expected_dims, n),
			                errdetail("Index \"%s\" holds vectors of %u dimensions.",
			                          RelationGetRelationName(index), expected_dims)));
		}
		v = (float4 *) ARR_DATA_PTR(array);
		if (hannoy_metric_info(metric).zero_nan)
		{
			bool zero = true;

			for (int i = 0; i < n && zero; i++)
				zero = v[i] == 0.0f;
			*is_zero = zero;
		}
		*dims = (uint32) n;
		return v;
	}
}
