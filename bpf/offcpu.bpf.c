/* Off-CPU time: sched:sched_switch. When it fires, `current` is the task
 * leaving the CPU, so its stack is the blocked stack; the interval ends when
 * the same thread is switched back in. Time is charged at switch-in to the
 * counts map of the then-current generation; the key remembers which
 * generation's stack map holds its stack ids (stack_seq).
 *
 * Pairing: off_starts is a plain hash (an LRU map would evict the records of
 * long-blocked threads without a trace); a record is removed at switch-in or
 * when its thread exits (proc.bpf.c), and a dying task's last switch-out
 * (prev_state EXIT_DEAD/EXIT_ZOMBIE) starts none. A full map, a record
 * replaced before its switch-in and a full counts map are counted
 * (ST_STARTS_FULL, ST_OFFCPU_UNPAIRED, spill()). */
#include "telegen.h"

#define STATE_EXITING 0x30      /* EXIT_DEAD | EXIT_ZOMBIE as sched_switch reports them */
#define STATE_MASK 0xff         /* 0x100 (TASK_REPORT_MAX) marks a preemption */

BPF_HASH(off_counts0, struct sample_key, struct offcpu_value, MAX_COUNTS);
BPF_HASH(off_counts1, struct sample_key, struct offcpu_value, MAX_COUNTS);
BPF_HASH(off_starts, u32, struct offcpu_start, MAX_THREADS);

TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    u32 seq = current_seq();

    /* switch-out of prev (== current) */
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    long state = args->prev_state;
    if (tid != 0 && !(state & STATE_EXITING) && wanted(tgid)) {
        note_process(tgid);
        struct offcpu_start start = {};
        start.ts = now;
        start.key.pid = tgid;
        start.key.tid = tid;
        bpf_get_current_comm(&start.key.comm, sizeof(start.key.comm));
        /* Stack copies (CFI unwinding) only for threads that block: a preempted
         * thread (TASK_RUNNING: prev_state 0, or 0x100 when preempted) waits for a
         * CPU, its stack is what the CPU profile shows, and preemptions of busy
         * threads would use up the copy budget; it gets frame pointers, marked
         * truncated. */
        walk_stacks_ex(args, &start.key, seq, 0,
                       (state & STATE_MASK) == 0 ? CAPTURE_SKIP : CAPTURE_BUDGETED);
        int err = off_starts.insert(&start.key.tid, &start);
        if (err == -EEXIST) {
            stat_add(ST_OFFCPU_UNPAIRED, 1);
            err = off_starts.update(&start.key.tid, &start);
        }
        if (err != 0)
            stat_add(ST_STARTS_FULL, 1);
    }

    /* switch-in of next */
    u32 next = args->next_pid;
    if (next == 0)
        return 0;
    struct offcpu_start *s = off_starts.lookup(&next);
    if (!s)
        return 0;
    u64 delta = now - s->ts;
    struct sample_key key = s->key;
    u64 began = s->ts;
    off_starts.delete(&next);
    if (delta < OFFCPU_MIN_NS) {
        stat_add(ST_OFFCPU_BELOW_THRESHOLD, 1);
        stat_add(ST_OFFCPU_BELOW_NS, delta);
        return 0;
    }
    struct offcpu_value zero = {}, *v;
    if (seq & 1)
        v = off_counts1.lookup_or_try_init(&key, &zero);
    else
        v = off_counts0.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->ns, delta);
        __sync_fetch_and_add(&v->count, 1);
    } else {
        stat_add(ST_COUNTS_FULL, 1);
        spill(SPILL_OFFCPU, seq, &key, 1, delta, 0);
    }
    stat_add(ST_OFFCPU_EVENTS, 1);
    emit_sample(EV_OFFCPU_SAMPLE, seq, began, delta, &key);
    return 0;
}
