/* Process lifecycle, so user space captures metadata early and releases it
 * when a process is gone: exec (image replaced) and exit (leader). */
#include "telegen.h"

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
#ifdef WATCH_EXEC
    /* process_names targeting: every exec may be a new match, so the tgid is
     * unclassified (profiled) again until user space decides */
    seen.delete(&tgid);
    targets.delete(&tgid);
    emit_control(EV_EXEC, tgid);
#else
    if (seen.lookup(&tgid)) {
        seen.delete(&tgid);
        emit_control(EV_EXEC, tgid);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    /* A thread's start records go with it (plain hashes: nothing evicts them).
     * A running thread has none left unless its end was never seen (a missed
     * switch-in or futex exit) or it is dying inside an allocator call. */
#ifdef OFF_CPU
    if (off_starts.delete(&tid) == 0)
        stat_add(ST_OFFCPU_UNPAIRED, 1);
#endif
#ifdef MUTEX
    if (lock_starts.delete(&tid) == 0)
        lock_stat(LS_UNPAIRED, 1);
#endif
#ifdef MEM_INUSE
    if (mem_pending.delete(&tid) == 0)
        mem_stat(MS_UNPAIRED, 1);
#endif
    if (tid != tgid)
        return 0;
#ifdef WATCH_EXEC
    targets.delete(&tgid);    /* a later process with this pid starts unclassified */
#endif
    if (seen.lookup(&tgid)) {
        seen.delete(&tgid);
        emit_control(EV_EXIT, tgid);
    }
    return 0;
}
