/* Memory profiling: uprobes on allocator entry points (attached per target
 * process or, whole host, on the system libc by telegen/receivers/ebpf/uprobes.py).
 *
 * Sampling by bytes, as Go's runtime does: each thread counts down a random
 * number of bytes drawn from an exponential distribution of mean
 * SAMPLE_EVERY_BYTES (table `mem_exp`, filled by user space); the allocation
 * that crosses zero is sampled. Bytes then form a Poisson process, so an
 * allocation of s bytes is sampled with probability p = 1 - exp(-s/rate),
 * and it is weighted by 1/p (16.16 fixed point, `weight()`), which keeps
 * totals unbiased. SAMPLE_EVERY_BYTES 0 samples every allocation (weight 1).
 *
 * MEM_INUSE: a sampled allocation's pointer (from the uretprobe) is kept in
 * `mem_live` (keyed by process and pointer) with its key, size and weight
 * until freed; user space sums the live entries at each window's end.
 * Otherwise the entry probe counts (objects, bytes) per stack in
 * mem_counts{0,1} (window generations); a full counts map spills (telegen.h).
 *
 * Pairing entry -> return (MEM_INUSE): `mem_pending` (per thread, removed at
 * the return or when the thread exits) remembers the stack pointer at entry;
 * only the return of that call (sp + 8, the return address popped) takes it,
 * so a nested allocator call or a return that never came (probes detached
 * mid-call) cannot give a sampled size to another call's pointer. A pending
 * record replaced unreturned, or one that does not fit, is counted
 * (MS_UNPAIRED, MS_PENDING_FULL).
 *
 * Calls glibc makes to its own public entry points (realloc(NULL, n) and
 * small-alignment memalign relay to malloc) are counted once: those cases
 * are left to the malloc probe.
 *
 * Options: SAMPLE_EVERY_BYTES, MEM_INUSE, MAX_LIVE. */
#include "telegen.h"

#define FP_ONE 65536ULL
#define EXP_TABLE 1024
#define WEIGHT_TABLE 3840   /* x = s/rate in [1, 16), steps of 1/256 */
#define MALLOC_ALIGNMENT 16

enum mem_stat {
    MS_CALLS = 0,      /* allocation calls seen (wanted processes) */
    MS_SAMPLED,        /* of which sampled */
    MS_LIVE_FULL,      /* inuse: sampled allocations not tracked (mem_live full) */
    MS_FREES_MATCHED,  /* inuse: frees of tracked allocations */
    MS_COUNTS_FULL,
    MS_PENDING_FULL,   /* inuse: a sampled allocation's entry record did not fit */
    MS_UNPAIRED,       /* inuse: a sampled call's record replaced before its return */
    MS_NSTATS,
};

struct mem_key_t {
    struct sample_key key;
    u64 caller;        /* return address at the probed entry (see mem_key) */
};

struct mem_value {
    u64 objects_fp;    /* sum of weights, 16.16 */
    u64 bytes;         /* sum of size * weight */
    u64 raw_objects;   /* sampled allocations */
    u64 raw_bytes;
};

struct mem_live_value {
    struct mem_key_t key;
    u64 size;
    u64 weight_fp;
};

struct mem_pending {
    u64 size;
    u64 weight_fp;
    u64 memptr;        /* posix_memalign's out pointer */
    u64 sp;            /* stack pointer at entry: the return comes with sp + 8 */
    struct mem_key_t key;
};

struct mem_live_key {
    u32 pid;           /* addresses are per process */
    u32 pad;
    u64 ptr;
};

BPF_PERCPU_ARRAY(mem_stats, u64, MS_NSTATS);
BPF_ARRAY(mem_exp, u32, EXP_TABLE);          /* -ln(u) * 65536, u uniform in (0, 1] */
BPF_ARRAY(mem_weight, u32, WEIGHT_TABLE);    /* 1/(1-exp(-x)) * 65536 */
BPF_TABLE("lru_hash", u32, s64, mem_countdown, MAX_THREADS);
BPF_HASH(mem_counts0, struct mem_key_t, struct mem_value, MAX_COUNTS);
BPF_HASH(mem_counts1, struct mem_key_t, struct mem_value, MAX_COUNTS);
#ifdef MEM_INUSE
BPF_HASH(mem_live, struct mem_live_key, struct mem_live_value, MAX_LIVE);
BPF_HASH(mem_pending, u32, struct mem_pending, MAX_THREADS);
#endif

static __always_inline void mem_stat(u32 slot, u64 n)
{
    u64 *v = mem_stats.lookup(&slot);
    if (v)
        *v += n;
}

#if SAMPLE_EVERY_BYTES > 0
static __always_inline s64 next_interval(void)
{
    u32 i = bpf_get_prandom_u32() % EXP_TABLE;
    u32 *e = mem_exp.lookup(&i);
    u64 v = e ? *e : FP_ONE;
    return (s64)((v * SAMPLE_EVERY_BYTES) >> 16) + 1;
}

/* 1/p for p = 1 - exp(-x), x = size/rate, in 16.16: series 1/x + 1/2 + x/12
 * below x = 1 (error < x^3/720), a table up to 16, 1 beyond. */
static __always_inline u64 weight(u64 size)
{
    if (size == 0)
        return FP_ONE;
    u64 x_fp = (size << 16) / SAMPLE_EVERY_BYTES;
    if (x_fp >= 16 * FP_ONE)
        return FP_ONE;
    if (x_fp >= FP_ONE) {
        u32 i = (u32)((x_fp - FP_ONE) >> 8);
        u32 *w = mem_weight.lookup(&i);
        return w ? *w : FP_ONE;
    }
    return ((u64)SAMPLE_EVERY_BYTES << 16) / size + FP_ONE / 2 + x_fp / 12;
}
#endif

/* Whether this allocation is sampled; its weight (16.16) in *w. */
static __always_inline int sampled(u32 tid, u64 size, u64 *w)
{
#if SAMPLE_EVERY_BYTES > 0
    s64 *left = mem_countdown.lookup(&tid);
    if (!left) {
        s64 first = next_interval();
        mem_countdown.update(&tid, &first);
        left = mem_countdown.lookup(&tid);
        if (!left)
            return 0;
    }
    s64 now = *left - (s64)size;
    if (now > 0) {
        *left = now;
        return 0;
    }
    /* exponential gaps are memoryless: a fresh draw from here keeps bytes a
     * Poisson process (several points inside one block count once: weight) */
    *left = next_interval();
    *w = weight(size);
    return 1;
#else
    *w = FP_ONE;
    return 1;
#endif
}

static __always_inline void mem_key(struct pt_regs *ctx, struct mem_key_t *k, u32 tgid, u32 tid,
                                    u32 seq)
{
    k->key.pid = tgid;
    k->key.tid = tid;
    k->key.flags = KEY_USER_MODE;
    bpf_get_current_comm(&k->key.comm, sizeof(k->key.comm));
    walk_stacks(ctx, &k->key, seq, 1);
    /* At a function's first instruction the frame is not set up yet: a
     * frame-pointer walk skips the immediate caller, whose return address
     * is at the top of the stack. */
    u64 ret = 0;
    bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
    k->caller = ret;
}

static __always_inline int on_alloc(struct pt_regs *ctx, u64 size, u64 memptr)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (size == 0 || !wanted(tgid))
        return 0;
    note_process(tgid);
    mem_stat(MS_CALLS, 1);
    u64 w = FP_ONE;
    if (!sampled(tid, size, &w))
        return 0;
    mem_stat(MS_SAMPLED, 1);
    u32 seq = current_seq();
    struct mem_key_t k = {};
    mem_key(ctx, &k, tgid, tid, seq);
#ifdef MEM_INUSE
    struct mem_pending p = {};
    p.size = size;
    p.weight_fp = w;
    p.memptr = memptr;
    p.sp = PT_REGS_SP(ctx);
    __builtin_memcpy(&p.key, &k, sizeof(k));
    int err = mem_pending.insert(&tid, &p);
    if (err == -EEXIST) {
        mem_stat(MS_UNPAIRED, 1);
        err = mem_pending.update(&tid, &p);
    }
    if (err != 0)
        mem_stat(MS_PENDING_FULL, 1);
    return 0;
#else
    struct mem_value zero = {}, *v;
    if (seq & 1)
        v = mem_counts1.lookup_or_try_init(&k, &zero);
    else
        v = mem_counts0.lookup_or_try_init(&k, &zero);
    if (!v) {
        mem_stat(MS_COUNTS_FULL, 1);
        spill(SPILL_MEM, seq, &k.key, 1, (size * w) >> 16, w);
        return 0;
    }
    __sync_fetch_and_add(&v->objects_fp, w);
    __sync_fetch_and_add(&v->bytes, (size * w) >> 16);
    __sync_fetch_and_add(&v->raw_objects, 1);
    __sync_fetch_and_add(&v->raw_bytes, size);
    return 0;
#endif
}

int mem_malloc(struct pt_regs *ctx)
{
    return on_alloc(ctx, PT_REGS_PARM1(ctx), 0);
}

int mem_calloc(struct pt_regs *ctx)
{
    return on_alloc(ctx, PT_REGS_PARM1(ctx) * PT_REGS_PARM2(ctx), 0);
}

int mem_aligned(struct pt_regs *ctx)       /* memalign, aligned_alloc (alignment, size) */
{
    if (PT_REGS_PARM1(ctx) <= MALLOC_ALIGNMENT)
        return 0;                          /* glibc relays to malloc */
    return on_alloc(ctx, PT_REGS_PARM2(ctx), 0);
}

int mem_posix_memalign(struct pt_regs *ctx)   /* (void **memptr, alignment, size) */
{
    if (PT_REGS_PARM2(ctx) <= MALLOC_ALIGNMENT)
        return 0;
    return on_alloc(ctx, PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx));
}

#ifdef MEM_INUSE
static __always_inline void forget(u32 tgid, u64 ptr)
{
    if (!ptr)
        return;
    struct mem_live_key k = {};
    k.pid = tgid;
    k.ptr = ptr;
    if (mem_live.delete(&k) == 0)
        mem_stat(MS_FREES_MATCHED, 1);
}
#endif

int mem_realloc(struct pt_regs *ctx)       /* (ptr, size) */
{
    u64 ptr = PT_REGS_PARM1(ctx);
    if (!ptr)
        return 0;                          /* realloc(NULL, n) relays to malloc */
#ifdef MEM_INUSE
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (wanted(tgid))
        forget(tgid, ptr);
#endif
    return on_alloc(ctx, PT_REGS_PARM2(ctx), 0);
}

#ifdef MEM_INUSE
int mem_free(struct pt_regs *ctx)
{
    u64 ptr = PT_REGS_PARM1(ctx);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (ptr && wanted(tgid))
        forget(tgid, ptr);
    return 0;
}

/* uretprobe of every allocating entry point: the sampled call's pointer */
int mem_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct mem_pending *p = mem_pending.lookup(&tid);
    if (!p || PT_REGS_SP(ctx) != p->sp + 8)
        return 0;                          /* not the sampled call's return */
    struct mem_live_value live = {};
    live.key = p->key;
    live.size = p->size;
    live.weight_fp = p->weight_fp;
    u64 ptr = PT_REGS_RC(ctx);
    if (p->memptr) {
        ptr = 0;
        if (PT_REGS_RC(ctx) == 0)
            bpf_probe_read_user(&ptr, sizeof(ptr), (void *)p->memptr);
    }
    mem_pending.delete(&tid);
    if (!ptr)
        return 0;
    struct mem_live_key lk = {};
    lk.pid = id >> 32;
    lk.ptr = ptr;
    if (mem_live.update(&lk, &live) != 0)
        mem_stat(MS_LIVE_FULL, 1);
    return 0;
}
#endif
