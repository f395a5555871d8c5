/* Reference workload for the overhead bench: ARGV[2] compute threads count
 * loop iterations for ARGV[1] seconds while one more thread sleeps 1 ms at a
 * time (about 1000 context switches per second for the off-CPU probe).
 * Prints total iterations per second. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static atomic_int stop;
static double seconds;

__attribute__((noinline)) static unsigned long crunch(unsigned long x)
{
    for (int i = 0; i < 1000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

#ifdef VARIED_STACKS
/* Built -DVARIED_STACKS: every sample sees a different user stack, as in a
 * real service. The call depth changes with every iteration (1 to 8 frames
 * of descend) and each frame keeps a volatile counter on the stack, so the
 * CFI copy's dedupe (same ip, sp and top of stack) almost never hits and
 * nearly every sample is copied and unwound. */
__attribute__((noinline)) static unsigned long descend(unsigned long x, int depth,
                                                      unsigned long tick)
{
    volatile unsigned long here = tick;      /* lives on this frame */
    unsigned long r = depth > 0 ? descend(x, depth - 1, tick + 1) : crunch(x);
    return r ^ (here & 0);                   /* read after the call: no tail call */
}
#define STEP(x, n) descend((x), (int)((n) % 8), (n))
#else
#define STEP(x, n) crunch(x)
#endif

static void *compute(void *arg)
{
    unsigned long x = 1, *iters = arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        x = STEP(x, *iters);
        (*iters)++;
    }
    return (void *)x;
}

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec ms = {0, 1000000};
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        nanosleep(&ms, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    seconds = argc > 1 ? atof(argv[1]) : 10.0;
    int n = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t th[65];
    unsigned long iters[64] = {0};
    struct timespec t0, t1, d = {(time_t)seconds, (long)((seconds - (long)seconds) * 1e9)};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n && i < 64; i++)
        pthread_create(&th[i], NULL, compute, &iters[i]);
    pthread_create(&th[64], NULL, sleeper, NULL);
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsigned long total = 0;
    for (int i = 0; i < n && i < 64; i++) {
        pthread_join(th[i], NULL);
        total += iters[i];
    }
    pthread_join(th[64], NULL);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("iters_per_s %.0f\n", total / wall);
    return 0;
}
