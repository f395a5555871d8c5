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
