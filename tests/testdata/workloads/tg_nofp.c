/* CFI unwinding ground truth (C): built -O2 -fomit-frame-pointer, so only
 * .eh_frame can find the callers. For ARGV[1] seconds main alternates
 *   main -> mid_a -> mid_b -> leaf_spin        (the program's own chain)
 *   main -> sort_phase -> qsort (libc, no frame pointers) -> by_value
 * Every call is followed by work, so none becomes a tail call. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 4096
static volatile unsigned long sink;
static unsigned long values[N];

__attribute__((noinline)) unsigned long leaf_spin(unsigned long x)
{
    for (int i = 0; i < 200000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

__attribute__((noinline)) unsigned long mid_b(unsigned long x)
{
    unsigned long r = leaf_spin(x ^ 0x55);
    sink = r;
    return r + sink;
}

__attribute__((noinline)) unsigned long mid_a(unsigned long x)
{
    unsigned long r = mid_b(x + 1);
    sink = r;
    return r ^ sink;
}

__attribute__((noinline)) int by_value(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    for (int i = 0; i < 20; i++)           /* make the comparator the hot leaf */
        sink = sink * 31 + (x ^ y);
    return x < y ? -1 : x > y;
}

__attribute__((noinline)) void sort_phase(unsigned long seed)
{
    for (int i = 0; i < N; i++)
        values[i] = seed = seed * 6364136223846793005UL + 1;
    qsort(values, N, sizeof values[0], by_value);
    sink = values[0];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    double end = now_s() + seconds;
    unsigned long x = 1, rounds = 0;
    while (now_s() < end) {
        x = mid_a(x);
        sort_phase(x);
        rounds++;
    }
    printf("rounds %lu\n", rounds);
    return (int)(sink & 0);
}
