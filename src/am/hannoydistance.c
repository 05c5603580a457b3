/*
 * hannoydistance.c
 *	  The SQL distance functions behind hannoy's operators.  They call the
 *	  core's kernels, the same ones the index uses, so an index scan and a
 *	  sequential scan report identical distances (I7).
 */
#include "hannoy/shim_guard.h"

#include "postgres.h"

#include "fmgr.h"
#include "utils/array.h"
#include "utils/varbit.h"

#include "hannoy/am.h"

/* Checks two real[] vectors and returns their common dimension count. */
static uint32
check_pair(ArrayType *a, ArrayType *b)
{
	HannoyCheckVectorArray(a, "vector");
	HannoyCheckVectorArray(b, "vector");
	if (ARR_DIMS(a)[0] != ARR_DIMS(b)[0])
		ereport(ERROR,
		        (errcode(ERRCODE_DATA_EXCEPTION),
		         errmsg("different vector dimensions %d and %d", ARR_DIMS(a)[0], ARR_DIMS(b)[0])));
	return (uint32) ARR_DIMS(a)[0];
}

PG_FUNCTION_INFO_V1(hannoy_real_l2_distance);

/* hannoy_real_l2_distance returns the euclidean distance of two real[]. */
Datum
hannoy_real_l2_distance(PG_FUNCTION_ARGS)
{
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType *b = PG_GETARG_ARRAYTYPE_P(1);
	uint32     n = check_pair(a, b);

	PG_RETURN_FLOAT8(hannoy_l2_distance((float *) ARR_DATA_PTR(a), (float *) ARR_DATA_PTR(b), n));
}

PG_FUNCTION_INFO_V1(hannoy_real_cosine_distance);

/* hannoy_real_cosine_distance returns 1 - cosine similarity (NaN for a zero vector). */
Datum
hannoy_real_cosine_distance(PG_FUNCTION_ARGS)
{
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType *b = PG_GETARG_ARRAYTYPE_P(1);
	uint32     n = check_pair(a, b);

	PG_RETURN_FLOAT8(
	    hannoy_cosine_distance((float *) ARR_DATA_PTR(a), (float *) ARR_DATA_PTR(b), n));
}

PG_FUNCTION_INFO_V1(hannoy_real_negative_inner_product);

/* hannoy_real_negative_inner_product returns minus the inner product. */
Datum
hannoy_real_negative_inner_product(PG_FUNCTION_ARGS)
{
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType *b = PG_GETARG_ARRAYTYPE_P(1);
	uint32     n = check_pair(a, b);

	PG_RETURN_FLOAT8(
	    hannoy_negative_inner_product((float *) ARR_DATA_PTR(a), (float *) ARR_DATA_PTR(b), n));
}

PG_FUNCTION_INFO_V1(hannoy_real_l1_distance);

/* hannoy_real_l1_distance returns the manhattan distance of two real[]. */
Datum
hannoy_real_l1_distance(PG_FUNCTION_ARGS)
{
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType *b = PG_GETARG_ARRAYTYPE_P(1);
	uint32     n = check_pair(a, b);

	PG_RETURN_FLOAT8(hannoy_l1_distance((float *) ARR_DATA_PTR(a), (float *) ARR_DATA_PTR(b), n));
}

PG_FUNCTION_INFO_V1(hannoy_bit_hamming_distance);

/* hannoy_bit_hamming_distance counts the differing bits of two equally long bit strings. */
Datum
hannoy_bit_hamming_distance(PG_FUNCTION_ARGS)
{
	VarBit *a = PG_GETARG_VARBIT_P(0);
	VarBit *b = PG_GETARG_VARBIT_P(1);

	if (VARBITLEN(a) != VARBITLEN(b))
		ereport(ERROR,
		        (errcode(ERRCODE_DATA_EXCEPTION),
		         errmsg("different bit string lengths %d and %d", VARBITLEN(a), VARBITLEN(b))));
	if (VARBITLEN(a) > HANNOY_MAX_BITS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("bit string has %d bits, more than the maximum of %d", VARBITLEN(a),
		                       HANNOY_MAX_BITS)));
	PG_RETURN_FLOAT8(hannoy_hamming_distance(VARBITS(a), VARBITS(b), (uint32) VARBITLEN(a)));
}
