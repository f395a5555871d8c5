/* Shared definitions for telegen's BPF programs (compiled by BCC).
 *
 * Options arrive as -D cflags from telegen/receivers/ebpf/bpf_loader.py:
 *   MAX_STACKS        entries of each stack map (one map per generation)
 *   MAX_COUNTS        entries of each counts map (one map per generation)
 *   MAX_THREADS       pending off-CPU records (LRU, one per blocked thread)
 *   MAX_PROCS         processes remembered as "seen" (LRU)
 *   STACK_DEPTH       frames kept per stack (kernel limit: 127)
 *   SELF_TGID         the agent's pid, skipped unless SELF_PROFILE is defined
 *   FILTER_TARGETS    only tgids the `targets` map says yes to are profiled
 *   WATCH_EXEC        process_names targeting: a tgid user space has not
 *                     classified yet is profiled until it is (so the first
 *                     milliseconds of a new process are not lost); user
 *                     space drops what it then classifies as unwanted
 *   INCLUDE_KERNEL    also walk kernel stacks
 *   TIMESTAMPS        emit one event per sample (timestamp + thread) as well
 *   MAX_SPILL         entries of each spill map (one per generation)
 *   OFFCPU_MIN_NS     off-CPU intervals shorter than this are not recorded
 *   USER_STACKS       (unwinding auto/dwarf) copy user stacks for CFI unwinding in
 *                     user space (capture_user_stack below); needs USTACK_PAGES,
 *                     USNAP_ENTRIES, USNAP_BUDGET
 *
 * Counting happens in the kernel. User space flips `control[0]` (the window
 * sequence number); programs write to the counts/stack maps of generation
 * (seq & 1), so user space reads and clears the other generation while
 * sampling carries on. No kernel struct is read by offset: only helper
 * results, tracepoint fields (from tracefs formats) and perf_event ctx regs.
 */
#ifndef TELEGEN_BPF_H
#define TELEGEN_BPF_H

#include <uapi/linux/ptrace.h>
#ifdef __x86_64__
/* What the programs use of <uapi/linux/bpf_perf_event.h> and <linux/sched.h>,
 * declared here (UAPI layouts): BCC compiles with __KERNEL__, so those two pull
 * in most of the kernel's headers (asm-generic/bpf_perf_event.h includes
 * <linux/ptrace.h>), and BCC's front end parses the text three times (its
 * tracepoint pass, its rewriter, the compile): ~1 s of a 2 s compile (#21).
 * The compiled instructions are the same (tests/integration/ebpf/
 * test_compiler_child.py compares them with the headers included). */
#define TASK_COMM_LEN 16
struct task_struct;
typedef struct pt_regs bpf_user_pt_regs_t;      /* asm-generic: x86-64's choice */
struct bpf_perf_event_data {
    bpf_user_pt_regs_t regs;
    __u64 sample_period;
    __u64 addr;
};
#else
#include <uapi/linux/bpf_perf_event.h>
#include <linux/sched.h>
#endif

#ifndef STACK_DEPTH
#define STACK_DEPTH 127
#endif

/* Stats slots (per-CPU counters, never cleared; user space takes deltas). */
enum telegen_stat {
    ST_CPU_SAMPLES = 0,
    ST_OFFCPU_EVENTS,
    ST_USTACK_EFAULT,
    ST_USTACK_EEXIST,
    ST_USTACK_ENOMEM,
    ST_USTACK_OTHER,
    ST_KSTACK_EFAULT,
    ST_KSTACK_EEXIST,
    ST_KSTACK_ENOMEM,
    ST_KSTACK_OTHER,
    ST_COUNTS_FULL,
    ST_STARTS_FULL,
    ST_EVENTS_LOST,
    ST_SEEN_FULL,
    ST_OFFCPU_BELOW_THRESHOLD,
    ST_OFFCPU_BELOW_NS,
    ST_USNAP_EMITTED,    /* user stacks copied to user space */
    ST_USNAP_DEDUPED,    /* ... already copied: the earlier copy's id was reused */
    ST_USNAP_THROTTLED,  /* budget exhausted: frame pointers instead (truncated) */
    ST_USNAP_LOST,       /* ring buffer full: frame pointers instead (truncated) */
    ST_USNAP_FAULT,      /* stack unreadable: frame pointers instead */
    ST_OFFCPU_UNPAIRED,  /* switch-out of a thread whose last one never ended (replaced) */
    ST_SPILLED,          /* counts map full: counted per thread in spillN, stack not kept */
    /* spill map full too: lost (count, value) per SPILL_* kind */
    ST_LOST_CPU, ST_LOST_CPU_VALUE,
    ST_LOST_OFFCPU, ST_LOST_OFFCPU_VALUE,
    ST_LOST_LOCK, ST_LOST_LOCK_VALUE,
    ST_LOST_MEM, ST_LOST_MEM_VALUE,
    ST_USNAP_SKIPPED,    /* preempted, no earlier copy: no user stack (not frame pointers) */
    ST_NSTATS,
};

/* Which profile a spilled count belongs to (sample_key.flags >> 8 in spillN). */
#define SPILL_CPU 0
#define SPILL_OFFCPU 1
#define SPILL_LOCK 2
#define SPILL_MEM 3

#define KEY_USER_MODE 1   /* the sample interrupted user code: user[0] is exact */
#define KEY_FP_FALLBACK 2 /* a user stack copy was wanted but failed: user_stack is a
                             frame-pointer stack id, counted truncated */
#define KEY_SPILLED 4     /* spillN: the counts map was full; only pid, tid and comm are kept,
                             flags >> 8 is the SPILL_* kind */

struct sample_key {
    u32 pid;          /* tgid */
    u32 tid;
    s32 user_stack;   /* stack id, or -errno */
    s32 kernel_stack; /* stack id, or -errno (or -ENOENT when not collected) */
    u32 stack_seq;    /* window whose stack map holds the ids */
    u32 flags;
    char comm[TASK_COMM_LEN];
    u32 py_stack;     /* 0: none; else id of the interpreter (CPython) frames of this sample */
    u32 go_labels;    /* 0: none; else id of the goroutine's pprof label set */
};

struct offcpu_value {
    u64 ns;
    u64 count;
};

struct offcpu_start {
    u64 ts;
    struct sample_key key;
};

enum event_kind {
    EV_NEW_PROC = 1,   /* first sample of a tgid: capture its metadata now */
    EV_EXEC = 2,       /* tgid replaced its image: metadata is stale */
    EV_EXIT = 3,       /* thread-group leader exited */
    EV_CPU_SAMPLE = 4, /* TIMESTAMPS only */
    EV_OFFCPU_SAMPLE = 5,
};

struct event {
    u32 kind;
    u32 count_seq;     /* window whose counts map got this sample */
    u64 ts;            /* CLOCK_MONOTONIC ns */
    u64 value;
    struct sample_key key;
};

struct stack_trace_t {
    u64 ip[STACK_DEPTH];
};

BPF_ARRAY(control, u32, 1);
BPF_PERCPU_ARRAY(stats, u64, ST_NSTATS);
BPF_TABLE("stacktrace", int, struct stack_trace_t, stacks0, MAX_STACKS);
BPF_TABLE("stacktrace", int, struct stack_trace_t, stacks1, MAX_STACKS);
/* Second chance for stacks whose bucket in stacksN is taken by another stack
 * (stack maps do not chain: -EEXIST). Ids from here carry OVERFLOW_BIT. */
BPF_TABLE("stacktrace", int, struct stack_trace_t, overflow0, MAX_STACKS / 4);
BPF_TABLE("stacktrace", int, struct stack_trace_t, overflow1, MAX_STACKS / 4);
#define OVERFLOW_BIT (1 << 30)
#define TARGET_YES 1
#define TARGET_NO 2
BPF_TABLE("lru_hash", u32, u8, targets, MAX_PROCS);
BPF_HASH(excluded, u32, u8, 1024);
BPF_TABLE("lru_hash", u32, u8, seen, MAX_PROCS);
BPF_RINGBUF_OUTPUT(events, EVENTS_PAGES);

/* A full counts map must not lose what it would have counted: the sample is
 * added to its thread's entry here instead (no stack), or to its process's
 * (tid 0) when the spill map has no room for the thread. */
struct spill_value {
    u64 count;
    u64 value;      /* ns (off-CPU, lock), bytes (memory), 0 (cpu) */
    u64 extra;      /* memory: objects in 16.16 */
};
BPF_HASH(spill0, struct sample_key, struct spill_value, MAX_SPILL);
BPF_HASH(spill1, struct sample_key, struct spill_value, MAX_SPILL);

static __always_inline void stat_add(u32 slot, u64 n)
{
    u64 *v = stats.lookup(&slot);
    if (v)
        *v += n;
}

static __always_inline void spill(u32 kind, u32 seq, struct sample_key *from, u64 count,
                                  u64 value, u64 extra)
{
    struct sample_key k = {};
    k.pid = from->pid;
    k.tid = from->tid;    /* the thread is kept (a wait's thread tells which work
                             waited); a full spill map gets a per-process entry */
    k.user_stack = -ENOSPC;
    k.kernel_stack = -ENOSPC;
    k.stack_seq = seq;
    k.flags = KEY_SPILLED | (kind << 8);
    __builtin_memcpy(k.comm, from->comm, sizeof(k.comm));
    struct spill_value zero = {}, *v;
    if (seq & 1)
        v = spill1.lookup_or_try_init(&k, &zero);
    else
        v = spill0.lookup_or_try_init(&k, &zero);
    if (!v) {
        k.tid = 0;
        if (seq & 1)
            v = spill1.lookup_or_try_init(&k, &zero);
        else
            v = spill0.lookup_or_try_init(&k, &zero);
    }
    if (v) {
        __sync_fetch_and_add(&v->count, count);
        __sync_fetch_and_add(&v->value, value);
        __sync_fetch_and_add(&v->extra, extra);
        stat_add(ST_SPILLED, 1);
        return;
    }
    stat_add(ST_LOST_CPU + 2 * kind, count);
    stat_add(ST_LOST_CPU + 2 * kind + 1, value);
}

static __always_inline u32 current_seq(void)
{
    u32 zero = 0;
    u32 *seq = control.lookup(&zero);
    return seq ? *seq : 0;
}

/* Whether this tgid is profiled (the agent itself, idle and excluded pids are not). */
static __always_inline int wanted(u32 tgid)
{
    if (tgid == 0)
        return 0;
#ifndef SELF_PROFILE
    if (tgid == SELF_TGID)
        return 0;
#endif
    if (excluded.lookup(&tgid))
        return 0;
#ifdef FILTER_TARGETS
    u8 *target = targets.lookup(&tgid);
#ifdef WATCH_EXEC
    if (target && *target == TARGET_NO)
        return 0;
#else
    if (!target || *target != TARGET_YES)
        return 0;
#endif
#endif
    return 1;
}

static __always_inline void emit_control(u32 kind, u32 tgid)
{
    struct event *ev = events.ringbuf_reserve(sizeof(struct event));
    if (!ev) {
        stat_add(ST_EVENTS_LOST, 1);
        return;
    }
    struct event zero = {};
    zero.kind = kind;
    zero.ts = bpf_ktime_get_ns();
    zero.key.pid = tgid;
    __builtin_memcpy(ev, &zero, sizeof(zero));
    events.ringbuf_submit(ev, 0);
}

/* First sample of a process: tell user space to capture its metadata while it lives. */
static __always_inline void note_process(u32 tgid)
{
    if (seen.lookup(&tgid))
        return;
    u8 one = 1;
    if (seen.insert(&tgid, &one) == 0)
        emit_control(EV_NEW_PROC, tgid);
}

static __always_inline void count_stack_error(int id, u32 efault, u32 eexist, u32 enomem,
                                              u32 other)
{
    if (id >= 0)
        return;
    if (id == -EFAULT)
        stat_add(efault, 1);
    else if (id == -EEXIST)
        stat_add(eexist, 1);
    else if (id == -ENOMEM)
        stat_add(enomem, 1);
    else
        stat_add(other, 1);
}

/* Fill key->user_stack/kernel_stack from the generation's stack map.
 * Kernel stacks of user-mode samples are -EFAULT by nature and not counted;
 * user stacks of kernel-mode samples are -EFAULT for kernel threads, ditto. */
static __always_inline int stack_id(void *ctx, u32 seq, u64 flags)
{
    int id = (seq & 1) ? stacks1.get_stackid(ctx, flags) : stacks0.get_stackid(ctx, flags);
    if (id != -EEXIST)
        return id;
    int id2 = (seq & 1) ? overflow1.get_stackid(ctx, flags) : overflow0.get_stackid(ctx, flags);
    return id2 >= 0 ? (id2 | OVERFLOW_BIT) : id2;
}


/* ---- Go (#26): goroutine labels, the goroutine behind a g0 sample (bpf/golabels.h) ---- */
#include "golabels.h"
static __always_inline void *go_map_op(int op, void *key, void *value)
{
    switch (op) {
    case GOM_PROC_GET:
        return go_procs.lookup(key);
    case GOM_SET_SCRATCH:
        return go_scratch_set.lookup(key);
    case GOM_SET_INSERT:
        return (void *)(long)go_label_sets.update(key, value);
    case GOM_STACK_SCRATCH:
        return go_scratch_stack.lookup(key);
    case GOM_STACK_INSERT:
        return (void *)(long)go_gstacks.update(key, value);
    case GOM_ZEROS:
        return go_zeros.lookup(key);
    }
    return 0;
}
/* ---- end Go ---- */

/* ---- user stack copies for CFI unwinding (USER_STACKS) -------------------------
 * capture_user_stack() copies the current task's user registers (ip, sp, bp,
 * from its pt_regs, so it works from perf events, tracepoints and uprobes
 * alike) and up to USTACK_MAX bytes of stack from sp to the `ustacks` ring.
 * It returns a snapshot id (USNAP_BIT set) for the key's user_stack field.
 * Dedupe: a stack whose (tgid, ip, sp, bp, hash of the USNAP_HASH_WORDS words
 * at sp) was copied before reuses that copy's id (LRU `usnap_seen`), so a
 * thread blocking over and over at the same place is copied and unwound once.
 * A stack whose leaf is Go code is hashed on its frame-pointer chain instead
 * (go_stack_hash, bpf/golabels.h; hash & 1 == 0 tells it apart). *fresh is set
 * when the id is a new copy (not a dedupe hit).
 * Budgeted callers (off-CPU: switch-outs far outnumber samples) get at most
 * USNAP_BUDGET new copies per CPU per second; CAPTURE_SKIP callers (a
 * preempted thread) only reuse an earlier copy, never make one. */
#define CAPTURE_BUDGETED 1
#define CAPTURE_SKIP 2      /* no new copy (e.g. preempted, not blocked): a dedupe hit
                               or frame pointers */

#ifdef USER_STACKS
#define USTACK_MAX 16384
#define USNAP_HASH_WORDS 64
#define USNAP_BIT (1 << 29)
#ifndef USNAP_WAKE_EVERY
#define USNAP_WAKE_EVERY 8
#endif

struct ustack_hdr {
    u32 snap_id;
    u32 pid;
    u32 tid;
    u32 len;          /* bytes of data[] */
    u64 ip;
    u64 sp;
    u64 bp;
};

/* On the ring: hdr, len bytes of data, then the usnap_key.hash (8 bytes; 0:
 * not deduped; bit 0 clear: a Go chain key, checked by user space). */
struct ustack_rec {
    struct ustack_hdr hdr;
    u8 data[USTACK_MAX];
    u64 tail;
};

struct usnap_key {
    u32 pid;
    u32 pad;
    u64 ip;
    u64 sp;
    u64 bp;
    u64 hash;
};

struct usnap_budget {
    u64 second;
    u64 used;
};

/* Where a process's code is (its executable mappings, merged into at most
 * CODE_RANGES ranges; written by user space: receivers/ebpf/code_ranges.py).
 * With it, the dedupe hash takes only the words at sp that point into code —
 * return addresses, at their offsets — not the frames' locals, which change
 * from sample to sample in an interpreter's loop (a busy CPython service:
 * 2370 copies, 1022 distinct unwound stacks, 1123 distinct code-word keys). */
#define CODE_RANGES 8
struct code_ranges {
    u64 n;
    u64 lo[CODE_RANGES];
    u64 hi[CODE_RANGES];
};

BPF_PERCPU_ARRAY(ustack_scratch, struct ustack_rec, 1);
BPF_PERCPU_ARRAY(ustack_ctr, u32, 1);
BPF_PERCPU_ARRAY(usnap_budget, struct usnap_budget, 1);
BPF_TABLE("lru_hash", struct usnap_key, u32, usnap_seen, USNAP_ENTRIES);
BPF_HASH(usnap_ranges, u32, struct code_ranges, MAX_PROCS);
BPF_RINGBUF_OUTPUT(ustacks, USTACK_PAGES);

static __always_inline int user_regs(u64 *ip, u64 *sp, u64 *bp)
{
    /* pt_regs is the x86-64 syscall/interrupt entry frame (ABI, as in ptrace) */
    struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(
        (struct task_struct *)bpf_get_current_task_btf());
    if (!r)
        return -EFAULT;
    if (bpf_probe_read_kernel(ip, sizeof(*ip), &r->ip) ||
        bpf_probe_read_kernel(sp, sizeof(*sp), &r->sp) ||
        bpf_probe_read_kernel(bp, sizeof(*bp), &r->bp))
        return -EFAULT;
    if (*sp == 0 || (s64)*ip < 0)       /* kernel thread: no user context */
        return -EFAULT;
    return 0;
}

static __always_inline int over_budget(void)
{
    u32 zero = 0;
    struct usnap_budget *b = usnap_budget.lookup(&zero);
    if (!b)
        return 1;
    u64 second = bpf_ktime_get_ns() / 1000000000ULL;
    if (b->second != second) {
        b->second = second;
        b->used = 0;
    }
    if (b->used >= USNAP_BUDGET)
        return 1;
    b->used++;
    return 0;
}

static __always_inline int capture_user_stack(u32 tgid, u32 tid, int flags,
                                              struct go_ctx *go, int *fresh)
{
    u64 ip, sp, bp;
    if (user_regs(&ip, &sp, &bp))
        return -EFAULT;
    u32 zero = 0;
    struct ustack_rec *rec = ustack_scratch.lookup(&zero);
    if (!rec)
        return -ENOMEM;
    struct usnap_key k = {};
    k.pid = tgid;
    k.ip = ip;
    k.sp = sp;
    k.bp = bp;
    k.hash = go_stack_hash(go, ip, sp, bp);           /* Go (#26): bpf/golabels.h */
    if (!k.hash && bpf_probe_read_user(rec->data, USNAP_HASH_WORDS * 8, (void *)sp) == 0) {
        u64 h = 0xcbf29ce484222325ULL;
        u64 *w = (u64 *)rec->data;
        struct code_ranges *code = usnap_ranges.lookup(&tgid);
        if (code) {            /* the code words and their offsets: USNAP_CODE_KEY */
            /* every slot is tested (unused ones are [0, 0): empty), never `j < n`:
             * a bound on n the verifier learns at each test would keep apart the
             * states it otherwise prunes (0.3 s more verifying per program) */
            for (int i = 0; i < USNAP_HASH_WORDS; i++) {
                u64 x = w[i];
                for (int j = 0; j < CODE_RANGES; j++) {
                    if (x >= code->lo[j] && x < code->hi[j]) {
                        h = (h ^ x ^ ((u64)i << 56)) * 0x100000001b3ULL;
                        break;
                    }
                }
            }
            k.hash = h | 3;
        } else {               /* every word */
            for (int i = 0; i < USNAP_HASH_WORDS; i++)
                h = (h ^ w[i]) * 0x100000001b3ULL;
            k.hash = (h & ~2ULL) | 1;
        }
    }
    if (k.hash) {
        u32 *known = usnap_seen.lookup(&k);
        if (known) {
            stat_add(ST_USNAP_DEDUPED, 1);
            return *known;
        }
    }
    if (flags & CAPTURE_SKIP)
        return -EAGAIN;
    if ((flags & CAPTURE_BUDGETED) && over_budget()) {
        stat_add(ST_USNAP_THROTTLED, 1);
        return -EBUSY;
    }
    u32 len = USTACK_MAX;
    u64 left = go_stack_left(go, sp);         /* Go (#26): a goroutine's stack ends there */
    if (left >= 8 && left < USTACK_MAX) {
        len = left;
        if (len > USTACK_MAX)
            return -EINVAL;
        if (bpf_probe_read_user(rec->data, len, (void *)sp) != 0)
            len = USTACK_MAX;
    }
    if (len == USTACK_MAX && bpf_probe_read_user(rec->data, USTACK_MAX, (void *)sp) != 0) {
        /* the stack's top is nearer than USTACK_MAX: read up to a page boundary */
        u32 to_page = 4096 - (sp & 4095);
        len = 0;
        for (int pages = 3; pages >= 0; pages--) {
            u32 n = to_page + pages * 4096;
            if (n > USTACK_MAX)
                n = USTACK_MAX;
            if (bpf_probe_read_user(rec->data, n, (void *)sp) == 0) {
                len = n;
                break;
            }
        }
        if (len == 0) {
            stat_add(ST_USNAP_FAULT, 1);
            return -EFAULT;
        }
    }
    u32 *ctr = ustack_ctr.lookup(&zero);
    if (!ctr)
        return -ENOMEM;
    u32 id = USNAP_BIT | ((bpf_get_smp_processor_id() & 0xFF) << 20) | (*ctr & 0xFFFFF);
    /* Wake the reader for every USNAP_WAKE_EVERY-th copy of a CPU only: the
     * others wait for that or for the reader's poll timeout (it consumes the
     * ring after every poll), which saves a thread wake-up per copy. */
    u64 wake = (*ctr % USNAP_WAKE_EVERY) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    *ctr += 1;
    rec->hdr.snap_id = id;
    rec->hdr.pid = tgid;
    rec->hdr.tid = tid;
    rec->hdr.len = len;
    rec->hdr.ip = ip;
    rec->hdr.sp = sp;
    rec->hdr.bp = bp;
    if (len > USTACK_MAX)
        return -EINVAL;
    __builtin_memcpy(rec->data + len, &k.hash, sizeof(k.hash));
    u64 size = sizeof(struct ustack_hdr) + len + sizeof(k.hash);
    if (size > sizeof(struct ustack_rec))
        return -EINVAL;
    if (ustacks.ringbuf_output(rec, size, wake) != 0) {
        stat_add(ST_USNAP_LOST, 1);
        return -ENOSPC;
    }
    stat_add(ST_USNAP_EMITTED, 1);
    *fresh = 1;
    if (k.hash)
        usnap_seen.update(&k, &id);
    return id;
}
#endif /* USER_STACKS */


/* ---- CPython (#22): the sampled thread's Python frames (bpf/cpython.h) ---- */
#include "cpython.h"
static __always_inline void *py_map_op(int op, void *key, void *value)
{
    switch (op) {
    case PYM_PROC_GET:
        return py_procs.lookup(key);
    case PYM_THREAD_GET:
        return py_threads.lookup(key);
    case PYM_THREAD_SET:
        return (void *)(long)py_threads.update(key, value);
    case PYM_THREAD_DEL:
        return (void *)(long)py_threads.delete(key);
    case PYM_STACK_GET:
        return py_stacks.lookup(key);
    case PYM_STACK_SET:
        return (void *)(long)py_stacks.update(key, value);
    case PYM_STAT_GET:
        return py_stats.lookup(key);
    case PYM_SCRATCH_GET:
        return py_scratch.lookup(key);
    }
    return 0;
}
/* ---- end CPython ---- */

/* Fill key->user_stack/kernel_stack. With USER_STACKS the user stack is a copy
 * for CFI unwinding (a snapshot id); frame pointers when the copy fails
 * (KEY_FP_FALLBACK marks that, except for tasks without user context).
 * `capture`: 0 or CAPTURE_BUDGETED. Any program may call this. */
static __always_inline void walk_stacks_ex(void *ctx, struct sample_key *key, u32 seq,
                                           int user_mode, int capture)
{
    int uid = -ENOENT, kid = -ENOENT, fresh = 0;
    struct go_ctx go = {};
    go_context(key->pid, &go);          /* Go (#26): bpf/golabels.h */
#ifdef USER_STACKS
    uid = capture_user_stack(key->pid, key->tid, capture, &go, &fresh);
    if (uid == -EAGAIN && !go.p) {
        /* a preempted thread whose stack was not copied before: no frame-pointer
         * walk either (in code without frame pointers it is garbage: measured,
         * 99% of preempted C/CPython time got partial garbage stacks). User space
         * shows [truncated] (with the thread's Python frames, when it runs
         * CPython). A Go process (registered: frame pointers always) walks them. */
        stat_add(ST_USNAP_SKIPPED, 1);
    } else if (uid < 0) {
        int err = uid;
        uid = stack_id(ctx, seq, BPF_F_USER_STACK);
        if (err != -EFAULT || uid >= 0)
            key->flags |= KEY_FP_FALLBACK;
    }
#else
    uid = stack_id(ctx, seq, BPF_F_USER_STACK);
#endif
#ifdef INCLUDE_KERNEL
    if (!user_mode)
        kid = stack_id(ctx, seq, 0);
#endif
    if ((user_mode || uid != -EFAULT) && uid != -EAGAIN)    /* EAGAIN: counted above */
        count_stack_error(uid, ST_USTACK_EFAULT, ST_USTACK_EEXIST, ST_USTACK_ENOMEM,
                          ST_USTACK_OTHER);
    if (!user_mode)
        count_stack_error(kid == -ENOENT ? 0 : kid, ST_KSTACK_EFAULT, ST_KSTACK_EEXIST,
                          ST_KSTACK_ENOMEM, ST_KSTACK_OTHER);
    key->user_stack = uid;
    key->kernel_stack = kid;
    key->stack_seq = seq;
    go_sample(key, &go, fresh ? uid : -1);  /* Go (#26): labels, goroutine context */
    key->py_stack = py_stack_id(key->pid, key->tid);  /* CPython (#22): bpf/cpython.h */
}

static __always_inline void walk_stacks(void *ctx, struct sample_key *key, u32 seq, int user_mode)
{
    walk_stacks_ex(ctx, key, seq, user_mode, 0);
}

static __always_inline void emit_sample(u32 kind, u32 seq, u64 ts, u64 value,
                                        struct sample_key *key)
{
#ifdef TIMESTAMPS
    struct event *ev = events.ringbuf_reserve(sizeof(struct event));
    if (!ev) {
        stat_add(ST_EVENTS_LOST, 1);
        return;
    }
    ev->kind = kind;
    ev->count_seq = seq;
    ev->ts = ts;
    ev->value = value;
    __builtin_memcpy(&ev->key, key, sizeof(*key));
    events.ringbuf_submit(ev, 0);
#endif
}

#endif /* TELEGEN_BPF_H */
