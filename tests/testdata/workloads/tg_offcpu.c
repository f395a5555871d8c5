/* Off-CPU ground truth: one thread blocks in block_sleep (nanosleep) and in
 * block_pipe (read on a pipe fed by another thread every 30 ms). Both issue
 * the system call themselves (no libc wrapper, which has no frame pointer),
 * so the blocked user stack starts inside those functions. Prints the
 * measured blocked time of each, in ns. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static int rounds;

static inline long sys3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) long long block_sleep(long ms)
{
    struct timespec req = {ms / 1000, (ms % 1000) * 1000000L};
    long long t0 = now_ns();
    sys3(SYS_nanosleep, (long)&req, 0, 0);
    return now_ns() - t0;
}

__attribute__((noinline)) long long block_pipe(void)
{
    char c;
    long long t0 = now_ns();
    sys3(SYS_read, fds[0], (long)&c, 1);
    return now_ns() - t0;
}

static void *feeder(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        usleep(30000);
        if (write(fds[1], "x", 1) != 1)
            break;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    rounds = argc > 1 ? atoi(argv[1]) : 20;
    long long slept = 0, piped = 0;
    if (pipe(fds))
        return 1;
    pthread_t th;
    pthread_create(&th, NULL, feeder, NULL);
    for (int i = 0; i < rounds; i++) {
        piped += block_pipe();
        slept += block_sleep(20);
    }
    pthread_join(th, NULL);
    printf("sleep_ns %lld\npipe_ns %lld\n", slept, piped);
    return 0;
}
