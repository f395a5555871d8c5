/* Span-linking ground truth: 3 threads, each runs a function of its own
 * (span_alpha / span_beta / span_gamma) during known intervals, and
 * between_spans outside them. Prints "tid IDX TID" once per thread and
 * "span IDX TID START_NS END_NS" (CLOCK_REALTIME, unix ns) after each
 * interval, flushed, so a test can export the intervals as OTLP spans as an
 * instrumented service's SDK would.
 * ARGV: rounds, span_ms, gap_ms. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int rounds = 4, span_ms = 400, gap_ms = 200;
static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Burn CPU until `ms` of wall time passed, checking the clock rarely. */
#define SPIN(ms, x)                                                        \
    do {                                                                   \
        long long end_ = now_ns(CLOCK_MONOTONIC) + (ms) * 1000000LL;       \
        do {                                                               \
            for (int i_ = 0; i_ < 20000; i_++)                             \
                x = x * 6364136223846793005UL + 1442695040888963407UL;     \
        } while (now_ns(CLOCK_MONOTONIC) < end_);                          \
    } while (0)

__attribute__((noinline)) unsigned long between_spans(unsigned long x) { SPIN(gap_ms, x); return x; }
__attribute__((noinline)) unsigned long span_alpha(unsigned long x) { SPIN(span_ms, x); return x; }
__attribute__((noinline)) unsigned long span_beta(unsigned long x) { SPIN(span_ms, x); return x; }
__attribute__((noinline)) unsigned long span_gamma(unsigned long x) { SPIN(span_ms, x); return x; }

typedef unsigned long (*work_fn)(unsigned long);
static work_fn fns[3] = {span_alpha, span_beta, span_gamma};

static void *worker(void *arg)
{
    int idx = (int)(long)arg;
    long tid = syscall(SYS_gettid);
    unsigned long x = (unsigned long)idx + 1;
    pthread_mutex_lock(&out);
    printf("tid %d %ld\n", idx, tid);
    fflush(stdout);
    pthread_mutex_unlock(&out);
    for (int r = 0; r < rounds; r++) {
        x = between_spans(x);
        long long t0 = now_ns(CLOCK_REALTIME);
        x = fns[idx](x);
        long long t1 = now_ns(CLOCK_REALTIME);
        pthread_mutex_lock(&out);
        printf("span %d %ld %lld %lld\n", idx, tid, t0, t1);
        fflush(stdout);
        pthread_mutex_unlock(&out);
    }
    x = between_spans(x);
    return (void *)x;
}

int main(int argc, char **argv)
{
    if (argc > 1) rounds = atoi(argv[1]);
    if (argc > 2) span_ms = atoi(argv[2]);
    if (argc > 3) gap_ms = atoi(argv[3]);
    pthread_t th[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    return 0;
}
