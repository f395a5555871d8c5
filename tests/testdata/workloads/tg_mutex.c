/* Lock-contention ground truth: THREADS threads take one pthread_mutex_t
 * ROUNDS times each and hold it HOLD_US microseconds (busy), then work
 * HOLD_US/2 outside it. Even threads lock through pthread_mutex_lock (from
 * contend_libc); odd threads through fp_mutex_lock (from contend_fp): a
 * frame-pointer copy of glibc 2.36's lock path for normal mutexes on the same
 * futex word, issuing the futex system call itself, so frame-pointer stacks
 * show who waits (Debian's libc has no frame pointers: above
 * pthread_mutex_lock they skip contend_libc). Both kinds interoperate: the
 * unlock is always pthread_mutex_unlock. Each thread measures the time spent
 * inside its lock calls. Prints wait_fp_ns, wait_libc_ns (and counts).
 *
 *   tg_mutex [THREADS [ROUNDS [HOLD_US]]]
 */
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int rounds = 200;
static long hold_ns = 500000;
static long long wait_fp, wait_libc, n_fp, n_libc;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void spin(long ns)
{
    long long end = now_ns() + ns;
    while (now_ns() < end)
        ;
}

static inline long sys_futex_wait(int *addr, int val)
{
    long ret;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(SYS_futex), "D"(addr), "S"(FUTEX_WAIT_PRIVATE), "d"(val), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

/* glibc 2.36 lll_lock + __lll_lock_wait for PTHREAD_MUTEX_NORMAL, then the
 * owner/user bookkeeping pthread_mutex_lock does. */
__attribute__((noinline)) void fp_mutex_lock(pthread_mutex_t *m)
{
    int *word = &m->__data.__lock;
    int expected = 0;
    if (!__atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED)) {
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 2)
            sys_futex_wait(word, 2);
        while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0)
            sys_futex_wait(word, 2);
    }
    m->__data.__owner = (int)syscall(SYS_gettid);
    m->__data.__nusers++;
}

__attribute__((noinline)) long long contend_fp(void)
{
    long long t0 = now_ns();
    fp_mutex_lock(&lock);
    long long waited = now_ns() - t0;
    spin(hold_ns);
    pthread_mutex_unlock(&lock);
    return waited;
}

__attribute__((noinline)) long long contend_libc(void)
{
    long long t0 = now_ns();
    pthread_mutex_lock(&lock);
    long long waited = now_ns() - t0;
    spin(hold_ns);
    pthread_mutex_unlock(&lock);
    return waited;
}

__attribute__((noinline)) void *worker_fp(void *arg)
{
    long long waited = 0;
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        waited += contend_fp();
        spin(hold_ns / 2);
    }
    pthread_mutex_lock(&stats_lock);
    wait_fp += waited;
    n_fp += rounds;
    pthread_mutex_unlock(&stats_lock);
    return NULL;
}

__attribute__((noinline)) void *worker_libc(void *arg)
{
    long long waited = 0;
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        waited += contend_libc();
        spin(hold_ns / 2);
    }
    pthread_mutex_lock(&stats_lock);
    wait_libc += waited;
    n_libc += rounds;
    pthread_mutex_unlock(&stats_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    rounds = argc > 2 ? atoi(argv[2]) : 200;
    hold_ns = (argc > 3 ? atol(argv[3]) : 500) * 1000L;
    pthread_t th[64];
    if (threads > 64)
        threads = 64;
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, i % 2 ? worker_fp : worker_libc, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    printf("wait_fp_ns %lld\nwait_libc_ns %lld\nlocks_fp %lld\nlocks_libc %lld\n", wait_fp,
           wait_libc, n_fp, n_libc);
    return 0;
}
