// gostacks is the Go workload of the ebpf receiver's Go tests (#26): what a
// profiler meets in a Go service, with known shares of CPU per function.
//
//   - main.burnHere: BURNERS goroutines in a CPU loop, each run under
//     pprof.Do with labels span_id / trace_id / worker (labels in BPF), and
//     process.pid=1 (a program's label may not replace the agent's)
//   - main.lockHere: LOCKERS goroutines contending for one sync.Mutex, each
//     spinning while it holds it (Go's lock path: futexes, the scheduler, mcall)
//   - main.allocHere: one goroutine allocating 256 KiB buffers: large
//     allocations and the GC run on the system stack (systemstack)
//   - main.cgoHere (cgo.go, only when built with cgo): one goroutine calling
//     into C (c_spin) through cgo (asmcgocall runs C on the system stack)
//   - main.backHere (cgoback.go, back.c, with cgo): Go calls C, which calls Go
//     back (cgocallback) on the same goroutine
//
// Usage: gostacks SECONDS [BURNERS [LOCKERS]]
// Prints "ready" once every goroutine runs, "done" at the end.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The labels put on burnHere (tests/integration/ebpf/test_go.py knows them).
const (
	SpanID  = "00f067aa0ba902b7"
	TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
)

var (
	mu     sync.Mutex
	shared uint64
	sink   float64
	stop   int32
	extra  []func() // more workloads (cgo.go)
	kept   [][]byte
)

//go:noinline
func spin(n int) float64 {
	x := 1.0
	for i := 0; i < n; i++ {
		x = x*1.0000001 + float64(i&3)
	}
	return x
}

//go:noinline
func burnHere() {
	for atomic.LoadInt32(&stop) == 0 {
		sink += spin(200000)
	}
}

//go:noinline
func lockHere() {
	for atomic.LoadInt32(&stop) == 0 {
		mu.Lock()
		shared += uint64(spin(20000))
		mu.Unlock()
	}
}

//go:noinline
func allocHere() {
	for atomic.LoadInt32(&stop) == 0 {
		kept = append(kept, make([]byte, 256<<10))
		if len(kept) > 16 {
			kept = kept[:0]
		}
	}
}

func arg(i, def int) int {
	if len(os.Args) > i {
		v, err := strconv.Atoi(os.Args[i])
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad argument:", os.Args[i])
			os.Exit(2)
		}
		return v
	}
	return def
}

func main() {
	seconds, burners, lockers := arg(1, 5), arg(2, 2), arg(3, 3)
	var wg sync.WaitGroup
	for i := 0; i < burners; i++ {
		wg.Add(1)
		worker := strconv.Itoa(i)
		go pprof.Do(context.Background(),
			// process.pid: a label posing as the agent's own (it must not win)
			pprof.Labels("span_id", SpanID, "trace_id", TraceID, "worker", worker,
				"process.pid", "1"),
			func(context.Context) { defer wg.Done(); burnHere() })
	}
	for i := 0; i < lockers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); lockHere() }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); allocHere() }()
	for _, f := range extra {
		wg.Add(1)
		go func(f func()) { defer wg.Done(); f() }(f)
	}
	fmt.Println("ready")
	time.Sleep(time.Duration(seconds) * time.Second)
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	fmt.Println("done")
}
