"""Sources of the test programs (each prints one line when ready, then loops)."""

C_PROGRAM = r"""
#include <stdio.h>
#include <time.h>

volatile int sink;

static inline __attribute__((always_inline)) int inner_step(int x) {
    int y = x * 3 + 1;
    sink = y;
    return y ^ (y >> 2);
}

__attribute__((noinline)) int outer_work(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++) {
        acc += inner_step(i + acc);
    }
    return acc;
}

__attribute__((noinline)) int leaf_compute(int n) {
    int s = 0;
    for (int i = 0; i < n; i++) s += i * i;
    return s;
}

int main(int argc, char **argv) {
    (void)argv;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        sink = outer_work(1000) + leaf_compute(argc * 1000);
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}
"""

CPP_PROGRAM = r"""
#include <cstdio>
#include <unistd.h>

namespace ns {
class Klass {
 public:
  __attribute__((noinline)) int method(int x);
};
int Klass::method(int x) {
  volatile int y = x * 2;
  return y + 1;
}
}  // namespace ns

int main() {
  ns::Klass k;
  std::printf("ready\n");
  std::fflush(stdout);
  volatile int s = 0;
  for (;;) {
    s = s + k.method(s);
    usleep(20000);
  }
}
"""

RUST_PROGRAM = r"""
mod shapes {
    pub struct Circle {
        pub r: f64,
    }
    impl Circle {
        #[inline(never)]
        pub fn area(&self) -> f64 {
            std::hint::black_box(self.r * self.r * 3.14159)
        }
    }
    #[inline(never)]
    pub fn compute(n: u64) -> u64 {
        let mut s = 0u64;
        for i in 0..n {
            s = std::hint::black_box(s.wrapping_add(i * i));
        }
        s
    }
}

fn main() {
    println!("ready");
    let c = shapes::Circle { r: 2.0 };
    loop {
        std::hint::black_box(c.area());
        std::hint::black_box(shapes::compute(1000));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
"""

NODE_PROGRAM = r"""
function telegenHotLoop(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.sqrt(i) * i;
  return s;
}
console.log("ready");
setInterval(() => { for (let k = 0; k < 20; k++) telegenHotLoop(50000); }, 5);
"""
