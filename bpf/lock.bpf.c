/* Lock contention: time threads wait in futex(FUTEX_WAIT family), from the
 * syscalls:sys_enter_futex / sys_exit_futex tracepoints. Entry only stores a
 * timestamp (and the futex address) per thread; the stack is walked at exit
 * (the user registers are the same as at entry) and only for waits of at
 * least MUTEX_MIN_NS, so short waits cost two tracepoint hits and no stack
 * walk. Counted per stack in lock_counts{0,1} (window generations):
 * contentions and nanoseconds.
 *
 * Pairing: lock_starts is a plain hash (an LRU map evicts silently); its
 * record goes at the exit or when the thread exits (proc.bpf.c). An exit is
 * paired only with the same thread's wait on the same futex word (the
 * syscall's arguments are read back from the saved user registers), so a
 * lost exit cannot charge a later FUTEX_WAKE's exit with the time in
 * between. What cannot be paired is counted (LS_UNPAIRED), a full
 * lock_starts too (LS_STARTS_FULL), and waits a full lock_counts cannot
 * take are counted per thread in spillN (LS_COUNTS_FULL: stack not kept).
 *
 * Options: MUTEX_MIN_NS. */
#include "telegen.h"

#define FUTEX_CMD_MASK 0x7f

enum lock_stat {
    LS_WAITS = 0,        /* FUTEX_WAIT-family calls of wanted processes */
    LS_BELOW,            /* waits shorter than MUTEX_MIN_NS */
    LS_BELOW_NS,         /* their time */
    LS_STARTS_FULL,
    LS_COUNTS_FULL,
    LS_UNPAIRED,         /* a wait whose exit was never seen, or an exit of another call */
    LS_NSTATS,
};

struct lock_value {
    u64 ns;
    u64 count;
};

struct lock_start {
    u64 ts;
    u64 uaddr;
};

BPF_PERCPU_ARRAY(lock_stats, u64, LS_NSTATS);
BPF_HASH(lock_starts, u32, struct lock_start, MAX_THREADS);
BPF_HASH(lock_counts0, struct sample_key, struct lock_value, MAX_COUNTS);
BPF_HASH(lock_counts1, struct sample_key, struct lock_value, MAX_COUNTS);

static __always_inline void lock_stat(u32 slot, u64 n)
{
    u64 *v = lock_stats.lookup(&slot);
    if (v)
        *v += n;
}

static __always_inline int futex_waits(int op)
{
    int cmd = op & FUTEX_CMD_MASK;
    /* FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI2 */
    return cmd == 0 || cmd == 6 || cmd == 9 || cmd == 13;
}

TRACEPOINT_PROBE(syscalls, sys_enter_futex)
{
    if (!futex_waits(args->op))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!wanted(tgid))
        return 0;
    struct lock_start start = {};
    start.ts = bpf_ktime_get_ns();
    start.uaddr = (u64)args->uaddr;
    int err = lock_starts.insert(&tid, &start);
    if (err == -EEXIST) {                  /* the last wait's exit never came */
        lock_stat(LS_UNPAIRED, 1);
        err = lock_starts.update(&tid, &start);
    }
    if (err != 0)
        lock_stat(LS_STARTS_FULL, 1);
    return 0;
}

/* Whether this sys_exit_futex ends the wait `start` recorded: the same futex
 * word and a wait operation (x86-64 syscall arguments stay in pt_regs). */
static __always_inline int same_call(struct lock_start *start)
{
    struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(
        (struct task_struct *)bpf_get_current_task_btf());
    u64 uaddr = 0, op = 0;
    if (!r || bpf_probe_read_kernel(&uaddr, sizeof(uaddr), &r->di) ||
        bpf_probe_read_kernel(&op, sizeof(op), &r->si))
        return 1;                          /* cannot tell: trust the thread id */
    return uaddr == start->uaddr && futex_waits((int)op);
}

TRACEPOINT_PROBE(syscalls, sys_exit_futex)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    struct lock_start *start = lock_starts.lookup(&tid);
    if (!start)
        return 0;
    if (!same_call(start)) {
        lock_starts.delete(&tid);
        lock_stat(LS_UNPAIRED, 1);
        return 0;
    }
    u64 delta = now - start->ts;
    lock_starts.delete(&tid);
    lock_stat(LS_WAITS, 1);
    if (delta < MUTEX_MIN_NS) {
        lock_stat(LS_BELOW, 1);
        lock_stat(LS_BELOW_NS, delta);
        return 0;
    }
    note_process(tgid);
    u32 seq = current_seq();
    struct sample_key key = {};
    key.pid = tgid;
    key.tid = tid;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    walk_stacks(args, &key, seq, 0);
    struct lock_value zero = {}, *v;
    if (seq & 1)
        v = lock_counts1.lookup_or_try_init(&key, &zero);
    else
        v = lock_counts0.lookup_or_try_init(&key, &zero);
    if (!v) {
        lock_stat(LS_COUNTS_FULL, 1);
        spill(SPILL_LOCK, seq, &key, 1, delta, 0);
        return 0;
    }
    __sync_fetch_and_add(&v->ns, delta);
    __sync_fetch_and_add(&v->count, 1);
    return 0;
}
