// diffhog alternates two CPU-bound functions for a known share of CPU time
// while writing a CPU profile, so `telegen diff` has a known change to find.
//
// Usage: diffhog OUT.pb.gz A_MS B_MS SECONDS
//
// Each round burns A_MS in main.burnA and B_MS in main.burnB (one goroutine
// locked to its thread, timed by the thread's own CPU clock so other load on
// the host does not change the split), so burnA's share of CPU is
// A_MS / (A_MS + B_MS).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

const rusageThread = 1 // RUSAGE_THREAD (Linux)

// threadCPU is the CPU time this OS thread has used.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		fail(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var total float64

//go:noinline
func spin(d time.Duration) {
	end := threadCPU() + d
	x := 1.0
	for threadCPU() < end {
		for i := 0; i < 5000; i++ {
			x = x*1.0000001 + float64(i&3)
		}
	}
	total += x
}

//go:noinline
func burnA(d time.Duration) { spin(d) }

//go:noinline
func burnB(d time.Duration) { spin(d) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "diffhog:", err)
	os.Exit(1)
}

func main() {
	runtime.LockOSThread()
	if len(os.Args) != 5 {
		fail(fmt.Errorf("usage: diffhog OUT.pb.gz A_MS B_MS SECONDS"))
	}
	a, errA := strconv.Atoi(os.Args[2])
	b, errB := strconv.Atoi(os.Args[3])
	secs, errS := strconv.ParseFloat(os.Args[4], 64)
	for _, err := range []error{errA, errB, errS} {
		if err != nil {
			fail(err)
		}
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		fail(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fail(err)
	}
	stop := time.Now().Add(time.Duration(secs * float64(time.Second)))
	for time.Now().Before(stop) {
		burnA(time.Duration(a) * time.Millisecond)
		burnB(time.Duration(b) * time.Millisecond)
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		fail(err)
	}
	fmt.Println(total)
}
