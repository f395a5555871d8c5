/* Go processes in BPF (#26): the goroutine's pprof labels at each sample, and,
 * for a sample on Go's system stack (g0: the scheduler, systemstack, cgo's C
 * code), the goroutine it runs for, so user space can unwind through the
 * stack switch (telegen/unwind/golang.py).
 *
 * User space (telegen/receivers/ebpf/golabels.py) registers each Go process
 * in `go_procs` (offsets of g.m, g.sched, g.labels, m.g0, m.curg, the TLS
 * slot of g, the label layout of its Go version) and puts the offset of
 * task_struct.thread.fsbase, from the kernel's BTF, in go_procs[0].
 *
 * At a sample of a registered process: g = *(fsbase + tls_offset); on g0
 * with a goroutine (m.curg), labels are the goroutine's, and its saved
 * registers (g.sched) and up to GO_GSTACK_MAX bytes of its stack go to
 * `go_gstacks` under the sample's stack snapshot id. The labels (at most
 * GO_MAX_LABELS pairs, keys and values cut at GO_LABEL_LEN bytes) are stored
 * in `go_label_sets` under a hash of their content, the key's go_labels.
 *   Go < 1.24: g.labels -> *labelMap (map[string]string): buckets of the
 *              hmap, at most GO_MAX_BUCKETS of them (B <= 1), no overflow chains
 *   Go >= 1.24: g.labels -> *labelMap{list []label}
 * Every read is bpf_probe_read_user of an address from the process: a bogus
 * process gets garbage labels or none, never more than the bounds above.
 *
 * Dedupe of stack copies (telegen.h capture_user_stack): a sample whose ip
 * is in the process's Go code (go_proc.text_lo/hi) is keyed on its stack's
 * shape rather than on the 64 words at sp, which on a goroutine's stack hold
 * loop values that change between samples: the word at sp when it points
 * into Go code (the return address of a frameless leaf) and the
 * frame-pointer chain (offset from sp and return address of each frame
 * record, at most GO_CHAIN_MAX records, GO_CHAIN_SPAN bytes above sp), and
 * for a sample on g0 the same of its goroutine (g.sched). Go keeps frame
 * pointers, so equal keys mean equal call paths; a copy is still unwound
 * exactly from the pclntab in user space, which checks that the unwound
 * stack is explained by what the key covered and drops the key otherwise
 * (a prologue, a signal frame: telegen/receivers/ebpf/unwinding.py).
 *
 * Included from telegen.h; BCC rewrites map calls in its main text only, so
 * this header reaches its maps through go_map_op(), defined in telegen.h. */
#ifndef TELEGEN_GOLABELS_H
#define TELEGEN_GOLABELS_H

#define GO_MAX_LABELS 8
#define GO_LABEL_LEN 64
#define GO_MAX_BUCKETS 2
#define GO_BUCKET_SIZE 272          /* map[string]string: 8 tophash + 8 keys + 8 values + overflow */
#define GO_MIN_TOPHASH 5            /* tophash below this: an empty cell */
#define GO_GSTACK_MAX 8192
#define GO_PROCS 4096
#define GO_LABEL_SETS 4096
#define GO_GSTACKS 512
#define GO_LABELS_MAP 1
#define GO_LABELS_SLICE 2
#define GO_CHAIN_MAX 32             /* frame records in a Go stack's dedupe key */
#define GO_CHAIN_SPAN (1 << 20)     /* ... at most this far above sp */
#define GO_HASH_CHAIN 2             /* usnap_key.hash low bits: keyed on the chain */
#define GO_HASH_GOROUTINE 4         /* ... and on the goroutine's (g0 sample) */
#define GO_SETTINGS 0               /* go_procs key 0: tls_offset = fsbase offset in task_struct */

struct go_proc {
    s64 tls_offset;       /* g's slot relative to the thread pointer (-8); key 0: fsbase offset */
    u16 g_m;
    u16 g_sched;          /* gobuf: sp +0, pc +8, bp +48 */
    u16 g_labels;
    u16 g_stack_hi;
    u16 m_g0;
    u16 m_curg;
    u16 labels_kind;      /* GO_LABELS_MAP / GO_LABELS_SLICE, 0: no labels */
    u16 m_vdso_sp;        /* m.vdsoSP / m.vdsoPC: a vDSO call (nanotime1, walltime) */
    u16 m_vdso_pc;        /* runs on g0's stack for the goroutine; 0: unknown */
    u16 pad[3];
    u64 text_lo;          /* the executable's Go code [text_lo, text_hi), run-time */
    u64 text_hi;          /* addresses; 0: unknown (no chain dedupe) */
};

/* What one sample found out about its Go thread (go_context). */
struct go_ctx {
    struct go_proc *p;    /* 0: not a registered Go process */
    u64 g;                /* the running g */
    u64 m;
    u64 goroutine;        /* on g0 for a goroutine (m.curg): that goroutine */
    u64 vdso;             /* a vDSO call of the running goroutine (m.vdsoSP set) */
    u64 on_goroutine;     /* running a goroutine (g == m.curg), not on g0 / gsignal */
};

struct go_label {
    u8 key_len;
    u8 value_len;
    char key[GO_LABEL_LEN];
    char value[GO_LABEL_LEN];
    u8 pad[6];
};

struct go_label_set {
    u32 count;
    u32 cut;              /* pairs or bytes left out (bounds) */
    struct go_label pairs[GO_MAX_LABELS];
};

struct go_gstack {
    u64 pc;
    u64 sp;
    u64 bp;
    u32 len;
    u32 pad;
    u8 data[GO_GSTACK_MAX];
};

BPF_HASH(go_procs, u32, struct go_proc, GO_PROCS);
BPF_TABLE("lru_hash", u32, struct go_label_set, go_label_sets, GO_LABEL_SETS);
BPF_TABLE("lru_hash", u32, struct go_gstack, go_gstacks, GO_GSTACKS);
BPF_PERCPU_ARRAY(go_scratch_set, struct go_label_set, 1);
BPF_PERCPU_ARRAY(go_scratch_stack, struct go_gstack, 1);
BPF_ARRAY(go_zeros, struct go_label_set, 1);       /* never written */

enum go_map_op_kind {
    GOM_PROC_GET, GOM_SET_SCRATCH, GOM_SET_INSERT, GOM_STACK_SCRATCH, GOM_STACK_INSERT,
    GOM_ZEROS,
};
static __always_inline void *go_map_op(int op, void *key, void *value);

static __always_inline u64 go_read_ptr(u64 addr)
{
    u64 v = 0;
    if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
        return 0;
    return v;
}

/* Copy one Go string (ptr, len at `hdr`) into dst[GO_LABEL_LEN]; its length kept. */
static __always_inline int go_read_string(u64 hdr, char *dst, u8 *len_out, u32 *cut)
{
    u64 sh[2] = {};
    if (bpf_probe_read_user(sh, sizeof(sh), (void *)hdr))
        return -1;
    u64 n = sh[1];
    if (n > GO_LABEL_LEN) {
        n = GO_LABEL_LEN;
        *cut += 1;
    }
    n &= 0x7f;
    if (n > GO_LABEL_LEN)
        return -1;
    if (n && bpf_probe_read_user(dst, n, (void *)sh[0]))
        return -1;
    *len_out = n;
    return 0;
}

static __always_inline void go_read_pair(struct go_label_set *set, u64 key_hdr, u64 value_hdr)
{
    u32 i = set->count;
    if (i >= GO_MAX_LABELS) {
        set->cut += 1;
        return;
    }
    struct go_label *l = &set->pairs[i];
    if (go_read_string(key_hdr, l->key, &l->key_len, &set->cut) ||
        go_read_string(value_hdr, l->value, &l->value_len, &set->cut))
        return;
    set->count = i + 1;
}

/* Go < 1.24: an hmap of map[string]string with at most GO_MAX_BUCKETS buckets. */
static __always_inline void go_read_map(struct go_label_set *set, u64 map_ptr)
{
    u64 hmap = go_read_ptr(map_ptr);
    if (!hmap)
        return;
    u8 hdr[24] = {};
    if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)hmap))
        return;
    u8 log2 = hdr[9];
    u64 buckets = *(u64 *)&hdr[16];
    if (!buckets)
        return;
    u32 nbuckets = log2 == 0 ? 1 : 2;
    if (log2 > 1)
        set->cut += 1;
    for (u32 b = 0; b < GO_MAX_BUCKETS; b++) {
        if (b >= nbuckets)
            break;
        u64 bucket = buckets + b * GO_BUCKET_SIZE;
        u8 tophash[8] = {};
        if (bpf_probe_read_user(tophash, sizeof(tophash), (void *)bucket))
            return;
        for (u32 i = 0; i < 8; i++) {
            if (tophash[i] < GO_MIN_TOPHASH)
                continue;
            go_read_pair(set, bucket + 8 + 16 * i, bucket + 8 + 128 + 16 * i);
        }
    }
}

/* Go >= 1.24: labelMap{LabelSet{list []label}}, label = {key, value string}. */
static __always_inline void go_read_slice(struct go_label_set *set, u64 labels)
{
    u64 sl[2] = {};
    if (bpf_probe_read_user(sl, sizeof(sl), (void *)labels))
        return;
    u64 n = sl[1];
    if (n > GO_MAX_LABELS) {
        set->cut += n - GO_MAX_LABELS;
        n = GO_MAX_LABELS;
    }
    for (u32 i = 0; i < GO_MAX_LABELS; i++) {
        if (i >= n)
            break;
        u64 at = sl[0] + 32 * i;
        go_read_pair(set, at, at + 16);
    }
}

static __always_inline u32 go_label_set_id(struct go_label_set *set)
{
    u64 h = 0xcbf29ce484222325ULL;
    u64 *w = (u64 *)set;
    for (u32 i = 0; i < sizeof(*set) / 8; i++)
        h = (h ^ w[i]) * 0x100000001b3ULL;
    u32 id = (u32)(h ^ (h >> 32));
    return id ? id : 1;
}

static __always_inline u32 go_labels_of(struct go_proc *p, u64 g)
{
    u64 labels = go_read_ptr(g + p->g_labels);
    if (!labels)
        return 0;
    u32 zero = 0;
    struct go_label_set *set = go_map_op(GOM_SET_SCRATCH, &zero, 0);
    if (!set)
        return 0;
    /* zeroed from a never-written map value: hashing needs no stale bytes,
     * and clang turns a zeroing loop into a memset BPF cannot call */
    void *zeros = go_map_op(GOM_ZEROS, &zero, 0);
    if (!zeros || bpf_probe_read_kernel(set, sizeof(*set), zeros))
        return 0;
    if (p->labels_kind == GO_LABELS_MAP)
        go_read_map(set, labels);
    else if (p->labels_kind == GO_LABELS_SLICE)
        go_read_slice(set, labels);
    if (set->count == 0)
        return 0;
    u32 id = go_label_set_id(set);
    go_map_op(GOM_SET_INSERT, &id, set);
    return id;
}

/* The goroutine behind a sample on g0's stack, for the unwinder: where it
 * stopped (g.sched, or m.vdsoPC/SP during a vDSO call) and its stack. */
static __always_inline void go_copy_goroutine(struct go_proc *p, u64 gp, u64 m, s32 snap_id,
                                              int vdso)
{
    u32 zero = 0;
    struct go_gstack *gs = go_map_op(GOM_STACK_SCRATCH, &zero, 0);
    if (!gs)
        return;
    if (vdso) {
        gs->sp = go_read_ptr(m + p->m_vdso_sp);
        gs->pc = go_read_ptr(m + p->m_vdso_pc);
        gs->bp = 0;
    } else {
        u64 sched[7] = {};
        if (bpf_probe_read_user(sched, sizeof(sched), (void *)(gp + p->g_sched)))
            return;
        gs->sp = sched[0];
        gs->pc = sched[1];
        gs->bp = sched[6];
    }
    u64 hi = go_read_ptr(gp + p->g_stack_hi);
    if (!gs->sp || hi <= gs->sp)
        return;
    u64 n = hi - gs->sp;
    if (n > GO_GSTACK_MAX)
        n = GO_GSTACK_MAX;
    n &= (GO_GSTACK_MAX << 1) - 1;
    if (n > GO_GSTACK_MAX || n < 8)
        return;
    if (bpf_probe_read_user(gs->data, n, (void *)gs->sp))
        return;
    gs->len = n;
    u32 key = snap_id;
    go_map_op(GOM_STACK_INSERT, &key, gs);
}

/* The running g of a registered Go process, its m, and the goroutine a g0
 * sample runs for; c->p stays 0 for other processes. */
static __always_inline void go_context(u32 pid, struct go_ctx *c)
{
    u32 settings = GO_SETTINGS;
    struct go_proc *p = go_map_op(GOM_PROC_GET, &pid, 0);
    if (!p)
        return;
    struct go_proc *cfg = go_map_op(GOM_PROC_GET, &settings, 0);
    s64 fs_off = cfg ? cfg->tls_offset : 0;
    if (fs_off <= 0 || fs_off > 65536)
        return;
    u64 task = (u64)bpf_get_current_task();
    u64 fsbase = 0;
    if (bpf_probe_read_kernel(&fsbase, sizeof(fsbase), (void *)(task + fs_off)) || !fsbase)
        return;
    u64 g = go_read_ptr(fsbase + p->tls_offset);
    if (!g)
        return;
    c->p = p;
    c->g = g;
    u64 m = go_read_ptr(g + p->g_m);
    c->m = m;
    if (!m)
        return;
    u64 g0 = go_read_ptr(m + p->m_g0);
    u64 curg = go_read_ptr(m + p->m_curg);
    if (g == g0 && curg)
        c->goroutine = curg;
    else if (p->m_vdso_sp && g == curg && go_read_ptr(m + p->m_vdso_sp))
        c->vdso = 1;
    else if (g == curg)
        c->on_goroutine = 1;
}

/* Bytes of a goroutine's stack from sp to its top (g.stack.hi), when the
 * sample is on that stack: nothing above it belongs to the goroutine, so a
 * copy needs no more (a goroutine's stack is often < 1 KiB, a copy is up to
 * 16 KiB: the ring holds that many more copies). 0: not known, copy it all. */
static __always_inline u64 go_stack_left(struct go_ctx *c, u64 sp)
{
    struct go_proc *p = c->p;
    if (!p || !c->on_goroutine || p->g_stack_hi != 8)
        return 0;
    u64 bounds[2] = {};        /* g.stack: lo, hi */
    if (bpf_probe_read_user(bounds, sizeof(bounds), (void *)c->g))
        return 0;
    if (sp < bounds[0] || sp >= bounds[1])
        return 0;
    return bounds[1] - sp;
}

static __always_inline u64 go_mix(u64 h, u64 v)
{
    return (h ^ v) * 0x100000001b3ULL;
}

/* The word at addr if it points into the process's Go code (a return address), else 0. */
static __always_inline u64 go_code_word(struct go_proc *p, u64 addr)
{
    u64 w = go_read_ptr(addr);
    return w >= p->text_lo && w < p->text_hi ? w : 0;
}

/* The frame-pointer chain from bp up the stack at sp: each record's offset from
 * sp and return address; it stops at a record that does not go up. */
static __always_inline u64 go_chain(u64 h, u64 sp, u64 bp)
{
    u64 at = bp, floor = sp;
    for (u32 i = 0; i < GO_CHAIN_MAX; i++) {
        if (at < floor || (at & 7) || at - sp > GO_CHAIN_SPAN)
            break;
        u64 link[2] = {};
        if (bpf_probe_read_user(link, sizeof(link), (void *)at))
            break;
        h = go_mix(go_mix(h, at - sp), link[1]);
        floor = at + 16;
        at = link[0];
    }
    return h;
}

/* The dedupe hash of a stack whose leaf is Go code (see the top of this file);
 * 0 for other stacks (telegen.h hashes their top words). */
static __always_inline u64 go_stack_hash(struct go_ctx *c, u64 ip, u64 sp, u64 bp)
{
    struct go_proc *p = c->p;
    if (!p || c->vdso || !p->text_hi || ip < p->text_lo || ip >= p->text_hi)
        return 0;
    u64 h = go_mix(0xcbf29ce484222325ULL, go_code_word(p, sp));
    h = go_chain(h, sp, bp);
    u64 kind = GO_HASH_CHAIN;
    if (c->goroutine) {
        u64 sched[7] = {};
        if (bpf_probe_read_user(sched, sizeof(sched), (void *)(c->goroutine + p->g_sched)))
            return 0;
        h = go_mix(h, sched[1]);
        h = go_mix(h, go_code_word(p, sched[0]));
        h = go_chain(h, sched[0], sched[6]);
        kind |= GO_HASH_GOROUTINE;
    }
    return (h & ~7ULL) | kind;
}

/* The sample-time hook (telegen.h walk_stacks_ex): labels into key->go_labels;
 * `snap_id` >= 0: a new stack copy, whose goroutine (a g0 sample, a vDSO call)
 * goes to go_gstacks for the unwinder. */
static __always_inline void go_sample(struct sample_key *key, struct go_ctx *c, s32 snap_id)
{
    struct go_proc *p = c->p;
    if (!p)
        return;
    u64 lg = c->goroutine ? c->goroutine : c->g;
    if (snap_id >= 0 && c->goroutine)
        go_copy_goroutine(p, c->goroutine, c->m, snap_id, 0);
    else if (snap_id >= 0 && c->vdso)
        go_copy_goroutine(p, c->g, c->m, snap_id, 1);
    if (p->labels_kind)
        key->go_labels = go_labels_of(p, lg);
}

#endif /* TELEGEN_GOLABELS_H */
