/* Allocation workload for bench/memory.py: one thread repeats a unit of
 * WORK iterations of computation followed by one malloc of a random size
 * (16 B .. 4 KiB) and its free, for SECONDS seconds after waiting DELAY_MS
 * (so a profiler can attach first). WORK 0 is the allocation-heavy case; the
 * bench picks WORK for ~100k allocations/s (the moderate case). Prints units
 * per second. Usage: bench_alloc WORK SECONDS DELAY_MS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static unsigned long crunch(unsigned long x, long n)
{
    for (long i = 0; i < n; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

__attribute__((noinline)) static void allocate(unsigned long r)
{
    void *p = malloc(16 + (r >> 33) % 4081);
    sink = p;
    free(p);
}

int main(int argc, char **argv)
{
    long per_unit = argc > 1 ? atol(argv[1]) : 0;
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    long delay_ms = argc > 3 ? atol(argv[3]) : 0;
    usleep(delay_ms * 1000);
    unsigned long x = 1;
    long units = 0;
    double start = now_s(), end = start + seconds;
    while (now_s() < end) {
        for (int i = 0; i < 64; i++) {
            x = crunch(x, per_unit);
            allocate(x);
            units++;
        }
    }
    printf("units_per_s %ld\n", (long)(units / (now_s() - start)));
    return (int)(x & 0);
}
