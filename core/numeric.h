/*
 * exp and natural log (sl_exp, sl_ln) without libm. The balancer needs only these two (the
 * latency EWMA's decay and the consistent-hashing ring's rendezvous scores),
 * and loading libm for them costs an idle sidecar about 320 kB of resident
 * memory (bench/sidecar). Accurate to a few ulp over the whole double range,
 * and the same bits on every platform, which a hash ring shared by several
 * gateways wants anyway.
 *
 * Ownership: pure functions.
 */
#ifndef SL_NUMERIC_H
#define SL_NUMERIC_H

/* e^x; +inf above 709.78, 0 below -745.13, NaN for NaN. */
double sl_exp(double x);
/* The natural log of x; -inf for 0, NaN for a negative x or NaN, +inf for +inf. */
double sl_ln(double x);

#endif
