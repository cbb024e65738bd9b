/*
 * exp and log by argument reduction and a short series (the textbook method,
 * as in every libm). Why not libm: see numeric.h.
 */
#include "numeric.h"

#include <math.h> /* INFINITY and NAN only: no function of libm is called */
#include <stdint.h>
#include <string.h>

/* ln 2 split so that k * LN2_HI is exact for the |k| <= 1075 used here. */
static const double LN2_HI = 6.93147180369123816490e-01;
static const double LN2_LO = 1.90821492927058770002e-10;
static const double LOG2_E = 1.44269504088896338700e+00;
static const double SQRT_2 = 1.41421356237309514547e+00;
/* beyond these e^x is not a finite double / rounds to zero */
static const double EXP_OVERFLOW = 709.782712893383973096;
static const double EXP_UNDERFLOW = -745.133219101941108420;

static double from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static uint64_t to_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

/* 2^k for a k in the normal exponent range [-1022, 1023]. */
static double pow2(int k)
{
    return from_bits((uint64_t)(k + 1023) << 52);
}

double sl_exp(double x)
{
    if (x != x)
        return x;
    if (x > EXP_OVERFLOW)
        return INFINITY;
    if (x < EXP_UNDERFLOW)
        return 0.0;
    /* x = k ln2 + r with |r| <= ln2 / 2, so e^x = 2^k e^r */
    double kd = x * LOG2_E;
    int k = (int)(kd + (kd >= 0 ? 0.5 : -0.5));
    double r = (x - k * LN2_HI) - k * LN2_LO;
    /* e^r by its Taylor series to r^13 / 13!: the next term is below
       2^-57 of the sum for |r| <= 0.347 */
    double p = 1.0 / 6227020800.0;
    static const double inverse_factorials[] = {
        1.0 / 479001600.0,
        1.0 / 39916800.0,
        1.0 / 3628800.0,
        1.0 / 362880.0,
        1.0 / 40320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
        1.0,
    };
    for (size_t i = 0; i < sizeof inverse_factorials / sizeof inverse_factorials[0]; i++)
        p = p * r + inverse_factorials[i];
    if (k >= -1022 && k <= 1023)
        return p * pow2(k);
    /* near overflow or in the subnormal range: scale in two normal steps,
       the last multiplication rounding once */
    int half = k / 2;
    return p * pow2(half) * pow2(k - half);
}

double sl_ln(double x)
{
    if (x != x || x < 0)
        return NAN;
    if (x == 0)
        return -INFINITY;
    if (x == INFINITY)
        return x;
    int e = 0;
    uint64_t bits = to_bits(x);
    if ((bits >> 52) == 0) {                     /* subnormal: make it normal first */
        bits = to_bits(x * 18014398509481984.0); /* 2^54 */
        e = -54;
    }
    e += (int)(bits >> 52) - 1023;
    double m = from_bits((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull); /* [1, 2) */
    if (m > SQRT_2) {
        m *= 0.5;
        e++;
    }
    /* ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1),
       |s| <= 0.1716: terms to s^23 leave an error below 2^-60 */
    double f = m - 1.0; /* exact for m in [0.5, 2] */
    double s = f / (2.0 + f);
    double s2 = s * s;
    double t = 1.0 / 23.0;
    for (int n = 21; n >= 3; n -= 2)
        t = t * s2 + 1.0 / n;
    t *= s2;
    double twice_s = 2.0 * s;
    return e * LN2_HI + (twice_s + (twice_s * t + e * LN2_LO));
}
