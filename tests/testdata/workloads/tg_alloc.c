/* Memory ground truth. Each call site allocates a known number of blocks of
 * a known size through one allocator entry point; the totals are printed
 * (`<site>_bytes N`, `<site>_count N`). Usage:
 *
 *   tg_alloc ROUNDS [LEAK_BLOCKS]
 *
 * Waits for a line on stdin before allocating (so a profiler can attach
 * first), prints `ready` after the leak, then waits for stdin to close.
 * site_leak keeps LEAK_BLOCKS blocks of 1 MiB (never freed, never touched);
 * every other site frees what it allocates. Built with frame pointers. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL 2048
#define MEDIUM (64 * 1024)
#define CALLOC_N 16
#define CALLOC_SIZE 4096
#define REALLOC_FROM 1024
#define REALLOC_TO (32 * 1024)
#define ALIGNED 8192
#define LEAK (1024 * 1024)

enum { S_SMALL, S_MEDIUM, S_CALLOC, S_RBASE, S_REALLOC, S_MEMALIGN, S_LEAK, S_FREED, S_N };
static long long bytes[S_N], counts[S_N];
static const char *names[S_N] = {"site_small", "site_medium", "site_calloc",
                                  "site_realloc_base", "site_realloc", "site_memalign",
                                  "site_leak", "site_freed"};
static void *volatile sink;   /* a volatile pointer: the compiler keeps every malloc/free pair */

static void note(int site, long long size)
{
    bytes[site] += size;
    counts[site]++;
}

__attribute__((noinline)) void site_small(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(SMALL);
        sink = p;
        note(S_SMALL, SMALL);
        free(p);
    }
}

__attribute__((noinline)) void site_medium(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(MEDIUM);
        sink = p;
        note(S_MEDIUM, MEDIUM);
        free(p);
    }
}

__attribute__((noinline)) void site_calloc(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = calloc(CALLOC_N, CALLOC_SIZE);
        sink = p;
        note(S_CALLOC, CALLOC_N * CALLOC_SIZE);
        free(p);
    }
}

/* the first block comes from malloc in site_realloc_base; growing it is the realloc site */
__attribute__((noinline)) void *site_realloc_base(void)
{
    void *p = malloc(REALLOC_FROM);
    note(S_RBASE, REALLOC_FROM);
    return p;
}

__attribute__((noinline)) void site_realloc(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = site_realloc_base();
        void *q = realloc(p, REALLOC_TO);
        sink = q;
        note(S_REALLOC, REALLOC_TO);
        free(q);
    }
}

__attribute__((noinline)) void site_memalign(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = NULL, *q;
        if (posix_memalign(&p, 64, ALIGNED) != 0)
            abort();
        note(S_MEMALIGN, ALIGNED);
        q = aligned_alloc(4096, ALIGNED);
        note(S_MEMALIGN, ALIGNED);
        sink = q;
        free(p);
        free(q);
    }
}

static void *volatile leaked[65536];   /* kept: the leak must not be optimized away */

__attribute__((noinline)) void site_leak(int n)
{
    for (int i = 0; i < n && i < 65536; i++) {
        leaked[i] = malloc(LEAK);
        note(S_LEAK, LEAK);
    }
}

__attribute__((noinline)) void site_freed(int n)
{
    void *tmp[256];
    for (int i = 0; i < n && i < 256; i++) {
        tmp[i] = malloc(LEAK);
        note(S_FREED, LEAK);
    }
    for (int i = 0; i < n && i < 256; i++)
        free(tmp[i]);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    int leak = argc > 2 ? atoi(argv[2]) : 0;
    char line[64];
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);   /* heap blocks only, no mmap per call */
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (int r = 0; r < rounds; r++) {
        site_small(100);
        site_medium(10);
        site_calloc(10);
        site_realloc(10);
        site_memalign(25);
    }
    site_freed(leak < 256 ? leak : 256);
    site_leak(leak);
    for (int s = 0; s < S_N; s++)
        printf("%s_bytes %lld\n%s_count %lld\n", names[s], bytes[s], names[s], counts[s]);
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
