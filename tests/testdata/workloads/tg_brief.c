/* A short-lived process: spins in brief_work for ARGV[1] ms, then exits. */
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) unsigned long brief_work(long ms)
{
    struct timespec t0, t;
    unsigned long x = 7;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 20000; i++)
            x = x * 6364136223846793005UL + 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
    return x;
}

int main(int argc, char **argv)
{
    return (int)(brief_work(argc > 1 ? atol(argv[1]) : 500) & 1);
}
