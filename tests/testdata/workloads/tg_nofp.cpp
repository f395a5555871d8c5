// CFI unwinding ground truth (C++): -O2 -fomit-frame-pointer. main drives a
// virtual call into a template, a std::function and a lambda:
//   main -> Driver::run (virtual) -> accumulate<unsigned long> -> step_leaf
//   main -> run_callback -> std::function -> lambda -> step_leaf
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long step_leaf(unsigned long x)
{
    for (int i = 0; i < 200000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

template <typename T> __attribute__((noinline)) T accumulate(T x)
{
    T r = step_leaf(x + 7);
    sink = r;
    return r + sink;
}

struct Base {
    virtual ~Base() = default;
    virtual unsigned long run(unsigned long x) = 0;
};

struct Driver : Base {
    __attribute__((noinline)) unsigned long run(unsigned long x) override
    {
        unsigned long r = accumulate<unsigned long>(x);
        sink = r;
        return r ^ sink;
    }
};

__attribute__((noinline)) unsigned long run_callback(const std::function<unsigned long(unsigned long)> &f,
                                                     unsigned long x)
{
    unsigned long r = f(x);
    sink = r;
    return r + 1;
}

static double now_s()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
    double end = now_s() + seconds;
    std::unique_ptr<Base> d(new Driver);
    auto lambda = [](unsigned long v) { unsigned long r = step_leaf(v); sink = r; return r * 3; };
    unsigned long x = 1, rounds = 0;
    while (now_s() < end) {
        x = d->run(x);
        x = run_callback(lambda, x);
        rounds++;
    }
    std::printf("rounds %lu\n", rounds);
    return static_cast<int>(sink & 0);
}
