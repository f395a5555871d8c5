/* A library that looks like libpython3.11 from outside (tests/integration/
 * ebpf/test_cpython_frames.py: hostile processes): it exports _PyRuntime,
 * _PyEval_EvalFrameDefault, PyCode_Type and Py_Version, but it is not CPython.
 * fakepy.c fills _PyRuntime so that the BPF walker finds a thread state for
 * the sampled thread and a frame chain that loops or leads nowhere. */
#include <stdint.h>

/* protected: the library's own copy is the one its users fill (fake_runtime),
 * not a copy relocated into the executable */
__attribute__((visibility("protected"))) unsigned char _PyRuntime[4096];
unsigned char PyCode_Type[512];
const uint32_t Py_Version = 0x030B07F0;   /* 3.11.7 final */

int _PyEval_EvalFrameDefault(int n)
{
    volatile int s = 0;
    for (int i = 0; i < n; i++)
        s += i;
    return s;
}

unsigned char *fake_runtime(void)
{
    return _PyRuntime;
}
