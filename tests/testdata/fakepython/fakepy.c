/* Usage: fakepy MODE OFFSETS...  (MODE: loop | wild)
 * OFFSETS (3.11 table): runtime_interpreters_head interp_threads_head tstate_next
 * tstate_thread_id tstate_frame cframe_current_frame frame_back frame_code
 * frame_instr frame_owner. Prints its pid, wakes up 100 times a second (so
 * it is sampled and seen) until a line arrives on stdin, then burns CPU for
 * up to 300 s in _PyEval_EvalFrameDefault (native stacks hold an "eval" frame). */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

unsigned char *fake_runtime(void);
int _PyEval_EvalFrameDefault(int n);

static unsigned char interp[4096], tstate[4096], cframe[256], f0[512], f1[512], junk[4096];

static void put(void *base, long off, uint64_t v) { memcpy((char *)base + off, &v, 8); }

int main(int argc, char **argv)
{
    if (argc != 12)
        return 2;
    long o[10];
    for (int i = 0; i < 10; i++)
        o[i] = atol(argv[i + 2]);
    int wild = strcmp(argv[1], "wild") == 0;
    memset(junk, 0xA5, sizeof(junk));
    put(fake_runtime(), o[0], (uint64_t)interp);
    put(interp, o[1], (uint64_t)tstate);
    put(tstate, o[2], 0);
    put(tstate, o[3], (uint64_t)pthread_self());
    put(tstate, o[4], (uint64_t)cframe);
    put(cframe, o[5], (uint64_t)f0);
    put(f0, o[7], (uint64_t)junk);            /* "code objects" that are not */
    put(f1, o[7], (uint64_t)(junk + 64));
    put(f0, o[8], (uint64_t)junk + 100);
    put(f1, o[8], (uint64_t)junk + 200);
    if (wild)                                 /* previous frame in unmapped memory */
        put(f0, o[6], 0xdead00000000ULL);
    else {                                    /* a cycle: f0 -> f1 -> f0 ... */
        put(f0, o[6], (uint64_t)f1);
        put(f1, o[6], (uint64_t)f0);
    }
    printf("%d\n", getpid());
    fflush(stdout);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    while (poll(&in, 1, 10) == 0)
        ;
    time_t end = time(NULL) + 300;
    while (time(NULL) < end)
        _PyEval_EvalFrameDefault(1000000);
    return 0;
}
