/* What the BPF CPython walker (#22) needs to know about one CPython process:
 * struct offsets of its version (from _Py_DebugOffsets in 3.13+, per-version
 * tables before) and where its runtime lives. Written by user space into the
 * py_procs map when a process is first seen; removed when it exits.
 * Mirrored by telegen.interpreters.cpython.offsets.CPyProc (ctypes).
 * Shared by #22's two parts: append fields at the end only.
 * PY_NONE marks an offset a version does not have. */
#ifndef TELEGEN_CPYTHON_OFFSETS_H
#define TELEGEN_CPYTHON_OFFSETS_H

#define PY_NONE 0xffff

struct py_offsets {
    u16 version;                  /* major * 100 + minor, e.g. 311 */
    u16 runtime_interpreters_head;/* _PyRuntimeState.interpreters.head */
    u16 interp_threads_head;      /* PyInterpreterState.tstate_head / threads.head */
    u16 tstate_next;              /* PyThreadState.next */
    u16 tstate_thread_id;         /* PyThreadState.thread_id (pthread_t == fsbase on x86-64 glibc) */
    u16 tstate_native_thread_id;  /* PyThreadState.native_thread_id (3.11+), else PY_NONE */
    u16 tstate_frame;             /* <3.11 .frame; 3.11/3.12 .cframe; 3.13+ .current_frame */
    u16 cframe_current_frame;     /* 3.11/3.12 _PyCFrame.current_frame, else PY_NONE */
    u16 frame_back;               /* PyFrameObject.f_back / _PyInterpreterFrame.previous */
    u16 frame_code;               /* f_code / f_executable */
    u16 frame_instr;              /* <3.11 f_lasti (int); 3.11/3.12 prev_instr; 3.13+ instr_ptr */
    u16 frame_owner;              /* 3.11 is_entry (bool); 3.12+ owner (char), else PY_NONE */
    u16 code_adaptive;            /* offsetof(PyCodeObject, co_code_adaptive) 3.11+, else PY_NONE */
    u16 task_fsbase;              /* offsetof(struct task_struct, thread.fsbase), from the
                                   * kernel's BTF (not CPython's: the same in every entry) */
    u16 pad[2];
};

struct py_proc {
    u64 runtime;                  /* absolute address of _PyRuntime in the process */
    struct py_offsets off;
};

#endif
