/* On-CPU sampling: a perf_event (cpu-clock) program on every CPU.
 * Counts samples per (pid, tid, user stack, kernel stack, comm) in the
 * counts map of the current generation. */
#include "telegen.h"

BPF_HASH(cpu_counts0, struct sample_key, u64, MAX_COUNTS);
BPF_HASH(cpu_counts1, struct sample_key, u64, MAX_COUNTS);

int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (tid == 0 || !wanted(tgid))
        return 0;
    note_process(tgid);

    /* Kernel addresses live in the upper half of the address space. */
    int user_mode = (s64)PT_REGS_IP(&ctx->regs) >= 0;
    u32 seq = current_seq();
    struct sample_key key = {};
    key.pid = tgid;
    key.tid = tid;
    key.flags = user_mode ? KEY_USER_MODE : 0;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    walk_stacks(ctx, &key, seq, user_mode);

    u64 zero = 0, *count;
    if (seq & 1)
        count = cpu_counts1.lookup_or_try_init(&key, &zero);
    else
        count = cpu_counts0.lookup_or_try_init(&key, &zero);
    if (count) {
        __sync_fetch_and_add(count, 1);
    } else {
        stat_add(ST_COUNTS_FULL, 1);
        spill(SPILL_CPU, seq, &key, 1, 0, 0);
    }
    stat_add(ST_CPU_SAMPLES, 1);
    emit_sample(EV_CPU_SAMPLE, seq, bpf_ktime_get_ns(), 1, &key);
    return 0;
}
