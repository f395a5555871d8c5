// goservice is a small Go service for the go receiver's tests. It serves
// net/http/pprof on 127.0.0.1 and keeps a known workload running:
//
//   - main.parkHere: N goroutines parked on a channel that is never written
//   - main.mutexHolder: HOLDERS goroutines contending for one sync.Mutex,
//     each holding it for ~1ms (mutex profile; the Lock waits are also in
//     the block profile)
//   - main.chanWaiter: a goroutine receiving from a channel fed every 2ms
//     (block profile)
//   - main.burnCPU: a CPU-bound loop, run under pprof.Do with label
//     span_id=SPAN (CPU profile, labels)
//   - main.allocate: allocates 4 KiB buffers, keeping the last 4096 (16 MiB in use)
//
// Usage: goservice [PORT [N [HOLDERS]]]   (PORT 0: any free port)
//
// Prints "port <n>" on stdout once listening, then runs until killed.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

// SPAN is the span_id pprof label put on burnCPU and the parked goroutines.
const SPAN = "00f067aa0ba902b7"

var (
	never   = make(chan struct{})
	mu      sync.Mutex
	shared  int
	total   float64
	kept    [4096][]byte
	keptIdx int
)

//go:noinline
func parkHere(started *sync.WaitGroup) {
	started.Done()
	<-never
}

//go:noinline
func mutexHolder() {
	for {
		mu.Lock()
		shared++
		time.Sleep(time.Millisecond)
		mu.Unlock()
	}
}

//go:noinline
func chanWaiter(ch chan int) {
	for {
		<-ch
	}
}

//go:noinline
func chanFeeder(ch chan int) {
	for i := 0; ; i++ {
		time.Sleep(2 * time.Millisecond)
		ch <- i
	}
}

//go:noinline
func burnCPU() {
	x := 1.0
	for {
		for i := 0; i < 1000000; i++ {
			x = x*1.0000001 + float64(i&3)
		}
		total += x
	}
}

//go:noinline
func allocate() {
	for {
		for i := 0; i < 64; i++ {
			kept[keptIdx] = make([]byte, 4096)
			keptIdx = (keptIdx + 1) % len(kept)
		}
		time.Sleep(time.Millisecond)
	}
}

func arg(i int, def int) int {
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
	port, n, holders := arg(1, 0), arg(2, 25), arg(3, 4)
	runtime.SetMutexProfileFraction(1)
	runtime.SetBlockProfileRate(1)

	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}

	var started sync.WaitGroup
	started.Add(n)
	pprof.Do(context.Background(), pprof.Labels("span_id", SPAN), func(context.Context) {
		for i := 0; i < n; i++ {
			go parkHere(&started)
		}
		go burnCPU()
	})
	started.Wait()
	for i := 0; i < holders; i++ {
		go mutexHolder()
	}
	ch := make(chan int)
	go chanWaiter(ch)
	go chanFeeder(ch)
	go allocate()

	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
