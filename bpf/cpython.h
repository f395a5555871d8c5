/* CPython frames in BPF (#22): at each sample of a process user space has
 * registered in `py_procs` (telegen/receivers/ebpf/cpython.py), find the
 * sampled thread's PyThreadState and walk its frame chain, recording per
 * frame the code object's address, the instruction value and the frame's
 * owner/entry byte. The frames go to `py_stacks` under an id made from their
 * content (key.py_stack); user space turns them into names (code objects
 * read from the process) and merges them with the native stack.
 *
 * Thread state: CPython keeps pthread_self() in PyThreadState.thread_id
 * (every version), which on x86-64 (glibc, musl) is the thread pointer, the
 * task's user fsbase. Its offset in task_struct comes from the kernel's BTF
 * at run time (in each process's entry: off.task_fsbase), never from headers. The thread
 * list of the runtime's first interpreter is searched (PY_MAX_THREADS
 * entries at most); the result is cached per tid and checked on every use.
 *
 * Every read is bpf_probe_read_user of an address that came from the
 * process: a bogus process or torn frames give a read fault or garbage
 * frames (counted; user space validates every code object), never more than
 * PY_MAX_FRAMES + PY_MAX_THREADS iterations. Included from telegen.h. */
#ifndef TELEGEN_CPYTHON_H
#define TELEGEN_CPYTHON_H

#include "cpython_offsets.h"

#define PY_MAX_FRAMES 64
#define PY_MAX_THREADS 64
#define PY_MAX_PROCS 4096
#define PY_STACK_ENTRIES 4096
#define PY_THREAD_ENTRIES 16384

/* py_stack.status */
#define PY_TRUNCATED 1      /* deeper than PY_MAX_FRAMES: the root-most frames are missing */
#define PY_FAULT 2          /* a read failed mid-chain: the frames kept are the leaf-most */

/* py_frame.instr when the instruction pointer is not within 4 GiB after the code object */
#define PY_INSTR_BAD 0xffffffff

/* tgid 0 is never sampled: py_procs[0] is not a process */
#define PYC_SETTINGS 0

enum py_stat {
    PYS_SAMPLES = 0,    /* samples of registered processes */
    PYS_STACKS,         /* ... with frames recorded */
    PYS_NO_THREAD,      /* ... whose thread has no PyThreadState (not a Python thread) */
    PYS_NO_FRAME,       /* ... whose thread state has no current frame */
    PYS_TRUNCATED,      /* stacks deeper than PY_MAX_FRAMES */
    PYS_FAULT,          /* unreadable thread state / frame chain */
    PYS_COLLISION,      /* id taken by other frames: sample left native-only */
    PYS_FULL,           /* py_stacks update failed */
    PYS_CACHE_HIT,      /* thread state found in py_threads */
    PYS_NO_FSBASE,      /* the fsbase offset was not set (BTF unreadable) */
    PYS_N,
};

struct py_frame {
    u64 code;       /* address of the code object (3.13+: f_executable) */
    u32 instr;      /* <3.11 f_lasti; 3.11+ instruction pointer - code, or PY_INSTR_BAD */
    u32 owner;      /* 3.11 is_entry; 3.12+ owner; 0 before 3.11 */
};

struct py_stack {
    u64 hash;       /* of pid and every frame: told apart from another with the same id */
    u32 pid;
    u16 depth;      /* frames[0..depth), leaf first */
    u16 status;     /* PY_TRUNCATED | PY_FAULT */
    struct py_frame frames[PY_MAX_FRAMES];
};

BPF_HASH(py_procs, u32, struct py_proc, PY_MAX_PROCS);  /* key 0: PYC_* settings */
BPF_TABLE("lru_hash", u32, u64, py_threads, PY_THREAD_ENTRIES);
BPF_TABLE("lru_hash", u32, struct py_stack, py_stacks, PY_STACK_ENTRIES);
/* the stack being built, and one frame's fields read at once */
#define PY_FRAME_READ 128
struct py_scratch_t {
    struct py_stack stack;
    u8 raw[PY_FRAME_READ];
};
BPF_PERCPU_ARRAY(py_scratch, struct py_scratch_t, 1);
/* every counter in one entry: user space reads them with one lookup per window */
struct py_stats_t {
    u64 n[PYS_N];
};
BPF_PERCPU_ARRAY(py_stats, struct py_stats_t, 1);

/* BCC rewrites map calls (`m.lookup()`) in its main text only, not in included
 * files: this header reaches its maps through py_map_op(), defined in
 * telegen.h right after the #include. Returns the value (lookups) or
 * (void *)(long)error (updates, deletes). */
enum py_map_op_kind {
    PYM_PROC_GET, PYM_THREAD_GET, PYM_THREAD_SET, PYM_THREAD_DEL,
    PYM_STACK_GET, PYM_STACK_SET, PYM_STAT_GET, PYM_SCRATCH_GET,
};
static __always_inline void *py_map_op(int op, void *key, void *value);

static __always_inline void py_stat(u32 slot)
{
    u32 zero = 0;
    struct py_stats_t *v = py_map_op(PYM_STAT_GET, &zero, 0);
    if (v && slot < PYS_N)
        v->n[slot] += 1;
}

static __always_inline u64 py_read_ptr(u64 addr)
{
    u64 v = 0;
    if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
        return 0;
    return v;
}

/* The u64 at `off` of a frame's bytes (off < PY_FRAME_READ - 8 was checked;
 * the clamp is for the verifier). */
static __always_inline u64 py_field(u8 *raw, u64 off)
{
    off &= PY_FRAME_READ - 1;
    if (off > PY_FRAME_READ - 8)
        off = PY_FRAME_READ - 8;
    return *(u64 *)(raw + off);
}

/* The current task's thread pointer, or 0. */
static __always_inline u64 py_fsbase(struct py_proc *p)
{
    u64 off = p->off.task_fsbase;
    if (off == 0) {
        py_stat(PYS_NO_FSBASE);
        return 0;
    }
    u64 task = bpf_get_current_task();
    u64 fsbase = 0;
    if (bpf_probe_read_kernel(&fsbase, sizeof(fsbase), (void *)(task + off)))
        return 0;
    return fsbase;
}

static __always_inline u64 py_thread_state(struct py_proc *p, u32 tid)
{
    u64 fsbase = py_fsbase(p);
    if (!fsbase)
        return 0;
    u64 id_off = p->off.tstate_thread_id;
    u64 *cached = py_map_op(PYM_THREAD_GET, &tid, 0);
    if (cached) {
        u64 ts = *cached;
        if (ts && py_read_ptr(ts + id_off) == fsbase) {
            py_stat(PYS_CACHE_HIT);
            return ts;
        }
        py_map_op(PYM_THREAD_DEL, &tid, 0);
    }
    u64 interp = py_read_ptr(p->runtime + p->off.runtime_interpreters_head);
    if (!interp)
        return 0;
    u64 ts = py_read_ptr(interp + p->off.interp_threads_head);
    u64 next_off = p->off.tstate_next;
    for (int i = 0; i < PY_MAX_THREADS; i++) {
        if (!ts)
            break;
        if (py_read_ptr(ts + id_off) == fsbase) {
            py_map_op(PYM_THREAD_SET, &tid, &ts);
            return ts;
        }
        ts = py_read_ptr(ts + next_off);
    }
    return 0;
}

/* The id of this sample's CPython frames in py_stacks, or 0 (not a
 * registered process, not a Python thread, no frames, no room). */
static __always_inline u32 py_stack_id(u32 tgid, u32 tid)
{
    if (tgid == PYC_SETTINGS)
        return 0;
    struct py_proc *p = py_map_op(PYM_PROC_GET, &tgid, 0);
    if (!p)
        return 0;
    py_stat(PYS_SAMPLES);
    u64 ts = py_thread_state(p, tid);
    if (!ts) {
        py_stat(PYS_NO_THREAD);
        return 0;
    }
    u32 zero = 0;
    struct py_scratch_t *sc = py_map_op(PYM_SCRATCH_GET, &zero, 0);
    if (!sc)
        return 0;
    struct py_stack *s = &sc->stack;
    u64 frame = py_read_ptr(ts + p->off.tstate_frame);
    if (frame && p->off.cframe_current_frame != PY_NONE)   /* 3.11/3.12: via _PyCFrame */
        frame = py_read_ptr(frame + p->off.cframe_current_frame);
    if (!frame) {
        py_stat(PYS_NO_FRAME);
        return 0;
    }
    u64 back_off = p->off.frame_back, code_off = p->off.frame_code;
    u64 instr_off = p->off.frame_instr, owner_off = p->off.frame_owner;
    int pointer_instr = p->off.version >= 311;
    int has_owner = owner_off != PY_NONE;
    /* one read per frame: [base, base + span) covers every field the walk needs */
    u64 base = back_off < code_off ? back_off : code_off;
    base = instr_off < base ? instr_off : base;
    base = has_owner && owner_off < base ? owner_off : base;
    u64 end = back_off > code_off ? back_off : code_off;
    end = instr_off > end ? instr_off : end;
    end = has_owner && owner_off > end ? owner_off : end;
    u64 span = end + 8 - base;
    if (span > PY_FRAME_READ) {
        py_stat(PYS_FAULT);
        return 0;
    }
    back_off -= base;
    code_off -= base;
    instr_off -= base;
    owner_off = has_owner ? owner_off - base : 0;
    if (back_off > PY_FRAME_READ - 8 || code_off > PY_FRAME_READ - 8 ||
        instr_off > PY_FRAME_READ - 8 || owner_off > PY_FRAME_READ - 8)
        return 0;
    u64 h = 0xcbf29ce484222325ULL ^ tgid;
    u32 depth = 0;
    u16 status = 0;
    for (int i = 0; i < PY_MAX_FRAMES; i++) {
        u64 code = 0, instr = 0;
        u8 owner = 0;
        if (bpf_probe_read_user(sc->raw, ((span - 1) & (PY_FRAME_READ - 1)) + 1,
                                (void *)(frame + base))) {
            status |= PY_FAULT;
            break;
        }
        code = py_field(sc->raw, code_off);
        instr = py_field(sc->raw, instr_off);
        if (pointer_instr)
            instr = (instr >= code && instr - code < PY_INSTR_BAD) ? instr - code : PY_INSTR_BAD;
        else
            instr = (u32)instr;         /* f_lasti: a C int */
        if (has_owner)
            owner = sc->raw[owner_off & (PY_FRAME_READ - 1)];
        s->frames[i].code = code;
        s->frames[i].instr = (u32)instr;
        s->frames[i].owner = owner;
        h = (h ^ code) * 0x100000001b3ULL;
        h = (h ^ (instr | ((u64)owner << 32))) * 0x100000001b3ULL;
        depth = i + 1;
        if (status & PY_FAULT)
            break;
        frame = py_field(sc->raw, back_off);
        if (!frame)
            break;
    }
    if (depth == 0) {                   /* the first frame was unreadable */
        py_stat(PYS_FAULT);
        return 0;
    }
    if (frame && depth == PY_MAX_FRAMES && !(status & PY_FAULT))
        status |= PY_TRUNCATED;
    if (status & PY_TRUNCATED)
        py_stat(PYS_TRUNCATED);
    if (status & PY_FAULT)
        py_stat(PYS_FAULT);
    h = (h ^ status) * 0x100000001b3ULL;
    s->hash = h;
    s->pid = tgid;
    s->depth = depth;
    s->status = status;
    u32 id = (u32)(h ^ (h >> 32));
    if (id == 0)
        id = 1;
    struct py_stack *known = py_map_op(PYM_STACK_GET, &id, 0);
    if (known) {
        if (known->hash != h || known->pid != tgid) {
            py_stat(PYS_COLLISION);
            return 0;
        }
    } else if (py_map_op(PYM_STACK_SET, &id, s)) {
        py_stat(PYS_FULL);
        return 0;
    }
    py_stat(PYS_STACKS);
    return id;
}

#endif /* TELEGEN_CPYTHON_H */
