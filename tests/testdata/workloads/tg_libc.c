/* The whole agent end to end: a thread burns CPU in burn_cpu() while the
 * main thread sleeps through libc in doze() (usleep -> clock_nanosleep), for
 * ARGV[1] seconds. Frame pointers in this binary, none in Debian's libc: the
 * CPU stacks reach main and libc's __libc_start_call_main; the off-CPU
 * stacks start in libc's clock_nanosleep. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;

__attribute__((noinline)) static unsigned long burn_cpu(void)
{
    unsigned long x = 3;
    while (!stop)
        for (int i = 0; i < 100000; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

static void *burner(void *arg)
{
    (void)arg;
    return (void *)burn_cpu();
}

__attribute__((noinline)) static void doze(long seconds)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        usleep(20000);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec < seconds);
}

int main(int argc, char **argv)
{
    pthread_t th;
    pthread_create(&th, NULL, burner, NULL);
    doze(argc > 1 ? atol(argv[1]) : 4);
    stop = 1;
    pthread_join(th, NULL);
    return 0;
}
