"""The C workload of the container tests: a hot leaf under an outer function,
both named after the test (``<prefix>_leaf``, ``<prefix>_outer``) so a
profile of the whole host tells them apart; prints "ready", then spins for
argv[1] seconds. Build with -fno-omit-frame-pointer for frame-pointer stacks."""

from __future__ import annotations

TEMPLATE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

/* the volatile local gives the leaf a frame: gcc leaves frame pointers out of
   leaf functions that use no stack, even with -mno-omit-leaf-frame-pointer */
__attribute__((noinline)) static unsigned long PREFIX_leaf(unsigned long x) {
    volatile unsigned long state = x;
    for (int i = 0; i < 2000; i++)
        state = state * 6364136223846793005UL + 1442695040888963407UL;
    return state;
}

__attribute__((noinline)) static void PREFIX_outer(double seconds) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 1000; i++)
            sink += PREFIX_leaf(sink + i);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv) {
    printf("ready\n");
    fflush(stdout);
    PREFIX_outer(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
"""


def spinner_source(prefix: str) -> str:
    return TEMPLATE.replace("PREFIX_", f"{prefix}_")


# A tiny JIT: copies a spin loop into anonymous executable memory, writes
# /tmp/perf-<its own pid>.map naming it argv[1] (the pid it sees: inside a
# container, its pid in the container's namespace, as real JITs do), prints
# "ready" and calls it until killed.
JIT = r"""
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const unsigned char SPIN[] = {
    0xb9, 0x00, 0x00, 0x10, 0x00,   /* mov ecx, 0x100000 */
    0xff, 0xc9,                     /* dec ecx */
    0x75, 0xfc,                     /* jnz -4 */
    0xc3                            /* ret */
};

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "jit_code";
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) { perror("mmap"); return 1; }
    memcpy(code, SPIN, sizeof SPIN);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); return 1; }
    fprintf(f, "%lx %zx %s\n", (unsigned long)code, sizeof SPIN, name);
    fclose(f);
    printf("ready %lx\n", (unsigned long)code);
    fflush(stdout);
    void (*spin)(void) = (void (*)(void))code;
    for (;;)
        spin();
}
"""
