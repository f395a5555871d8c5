// Go twin of bench_work.c for the overhead bench: ARGV[2] goroutines count
// loop iterations for ARGV[1] seconds (GOMAXPROCS = ARGV[2] + 1) while one
// more goroutine sleeps 1 ms at a time. Prints total iterations per second.
// Built -ldflags="-s -w" (no .symtab, DWARF or .eh_frame), as images ship.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

//go:noinline
func crunch(x uint64) uint64 {
	for i := 0; i < 1000; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

func main() {
	seconds, _ := strconv.ParseFloat(os.Args[1], 64)
	threads, _ := strconv.Atoi(os.Args[2])
	runtime.GOMAXPROCS(threads + 1)
	var stop atomic.Bool
	var total atomic.Uint64
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			x, n := seed, uint64(0)
			for !stop.Load() {
				x = crunch(x)
				n++
			}
			total.Add(n)
			if x == 42 {
				fmt.Println(x)
			}
		}(uint64(t))
	}
	go func() {
		for !stop.Load() {
			time.Sleep(time.Millisecond)
		}
	}()
	start := time.Now()
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	fmt.Printf("iters_per_s %.0f\n", float64(total.Load())/time.Since(start).Seconds())
}
