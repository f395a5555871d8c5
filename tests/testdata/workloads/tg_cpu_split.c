/* CPU ground truth: each thread spends CPU time in hot_a and hot_b in a 3:1
 * ratio (measured with the thread CPU clock), for ARGV[1] seconds of wall time
 * on ARGV[2] threads. Prints the process CPU time consumed, in ns. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds;

static long long thread_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spin for `ns` of this thread's CPU time, checking the clock rarely so that
 * time inside the vDSO stays negligible. */
static __attribute__((noinline)) unsigned long spin(long long ns, unsigned long x)
{
    long long end = thread_ns() + ns;
    do {
        for (int i = 0; i < 20000; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
    } while (thread_ns() < end);
    return x;
}

__attribute__((noinline)) unsigned long hot_a(unsigned long x) { return spin(3000000, x) + 1; }
__attribute__((noinline)) unsigned long hot_b(unsigned long x) { return spin(1000000, x) + 1; }

static void *work(void *arg)
{
    struct timespec t0, t;
    unsigned long x = (unsigned long)arg;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        x = hot_a(x);
        x = hot_b(x);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return (void *)x;
}

int main(int argc, char **argv)
{
    seconds = argc > 1 ? atof(argv[1]) : 3.0;
    int n = argc > 2 ? atoi(argv[2]) : 1;
    pthread_t th[64];
    for (int i = 0; i < n && i < 64; i++)
        pthread_create(&th[i], NULL, work, (void *)(long)(i + 1));
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(th[i], NULL);
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    printf("cpu_ns %lld\n", ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
