/* Off-CPU through libc (no frame pointers in Debian's libc): built -O2
 * -fomit-frame-pointer; each blocking call goes through the libc wrapper.
 *   reader_loop -> wait_pipe -> read       (a feeder writes every 20 ms)
 *   main -> sleeper_loop -> nap -> nanosleep (20 ms)
 *   contend -> take_lock -> pthread_mutex_lock (a holder keeps it 30 ms of 60)
 * Runs ARGV[1] rounds (about 60 ms each). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static int rounds;
static volatile long sink;
static volatile int done;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) long wait_pipe(void)
{
    char c = 0;
    long n = read(fds[0], &c, 1);
    sink += c;
    return n + sink;
}

static void *reader_loop(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++)
        sink += wait_pipe();
    return NULL;
}

static void *feeder(void *arg)
{
    (void)arg;
    struct timespec t = {0, 20000000};
    for (int i = 0; i < rounds; i++) {
        nanosleep(&t, NULL);
        if (write(fds[1], "x", 1) != 1)
            break;
    }
    return NULL;
}

__attribute__((noinline)) long take_lock(void)
{
    pthread_mutex_lock(&lock);
    sink++;
    pthread_mutex_unlock(&lock);
    return sink;
}

static void *contend(void *arg)
{
    (void)arg;
    while (!done) {
        sink += take_lock();
        usleep(1000);
    }
    return NULL;
}

static void *holder(void *arg)
{
    (void)arg;
    struct timespec t = {0, 30000000};
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        nanosleep(&t, NULL);
        pthread_mutex_unlock(&lock);
        nanosleep(&t, NULL);
    }
    return NULL;
}

__attribute__((noinline)) long nap(long ms)
{
    struct timespec t = {0, ms * 1000000L};
    long r = nanosleep(&t, NULL);
    sink += r;
    return sink;
}

__attribute__((noinline)) void sleeper_loop(void)
{
    for (int i = 0; i < rounds; i++)
        sink += nap(20);
}

int main(int argc, char **argv)
{
    rounds = argc > 1 ? atoi(argv[1]) : 30;
    if (pipe(fds))
        return 1;
    pthread_t th[4];
    pthread_create(&th[0], NULL, reader_loop, NULL);
    pthread_create(&th[1], NULL, feeder, NULL);
    pthread_create(&th[2], NULL, holder, NULL);
    pthread_create(&th[3], NULL, contend, NULL);
    sleeper_loop();
    pthread_join(th[2], NULL);
    done = 1;
    for (int i = 0; i < 4; i++)
        if (i != 2)
            pthread_join(th[i], NULL);
    printf("done %d\n", rounds);
    return 0;
}
