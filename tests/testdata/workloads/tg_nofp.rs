// CFI unwinding ground truth (Rust): -C force-frame-pointers=no. The program's
// own main calls mid_a -> mid_b -> leaf_spin; std's runtime sits below main.
use std::hint::black_box;
use std::time::{Duration, Instant};

#[inline(never)]
fn leaf_spin(mut x: u64) -> u64 {
    for _ in 0..200_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    }
    black_box(x)
}

#[inline(never)]
fn mid_b(x: u64) -> u64 {
    let r = leaf_spin(black_box(x ^ 0x55));
    black_box(r).wrapping_add(1)
}

#[inline(never)]
fn mid_a(x: u64) -> u64 {
    let r = mid_b(black_box(x + 1));
    black_box(r) ^ 3
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut x = 1u64;
    let mut rounds = 0u64;
    while Instant::now() < end {
        x = mid_a(x);
        rounds += 1;
    }
    println!("rounds {} {}", rounds, x & 0);
}
