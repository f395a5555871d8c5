// cpuhog burns CPU and allocates memory while writing pprof profiles with
// runtime/pprof, so tests have real Go profiles to read.
//
// Usage: cpuhog OUTDIR [PROFILES] [SECONDS]
//
// Writes OUTDIR/cpu-000.pb.gz ... (PROFILES CPU profiles of SECONDS each,
// default 2 and 1) and then OUTDIR/heap.pb.gz.
package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

var sink []byte
var keep [][]byte
var total float64

// mix is small enough to be inlined into burn, giving frames with inlined lines.
func mix(x float64) float64 { return math.Sqrt(x*x+1) * 1.0000001 }

//go:noinline
func burn(d time.Duration) {
	end := time.Now().Add(d)
	x := 1.0
	for time.Now().Before(end) {
		for i := 0; i < 20000; i++ {
			x = mix(x) - x + float64(i&7)
		}
	}
	total += x
}

//go:noinline
func churn(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := 0; i < 200; i++ {
			sink = make([]byte, 1024+i*16)
			sink[0] = byte(i)
		}
		if len(keep) < 4096 {
			keep = append(keep, make([]byte, 4096))
		}
	}
}

//go:noinline
func work(d time.Duration) {
	burn(d * 3 / 4)
	churn(d / 4)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cpuhog:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: cpuhog OUTDIR [PROFILES] [SECONDS]"))
	}
	out := os.Args[1]
	profiles, seconds := 2, 1.0
	var err error
	if len(os.Args) > 2 {
		if profiles, err = strconv.Atoi(os.Args[2]); err != nil {
			fail(err)
		}
	}
	if len(os.Args) > 3 {
		if seconds, err = strconv.ParseFloat(os.Args[3], 64); err != nil {
			fail(err)
		}
	}
	runtime.MemProfileRate = 16 * 1024
	if err := os.MkdirAll(out, 0o755); err != nil {
		fail(err)
	}
	for i := 0; i < profiles; i++ {
		f, err := os.Create(filepath.Join(out, fmt.Sprintf("cpu-%03d.pb.gz", i)))
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		work(time.Duration(seconds * float64(time.Second)))
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fail(err)
		}
	}
	runtime.GC()
	f, err := os.Create(filepath.Join(out, "heap.pb.gz"))
	if err != nil {
		fail(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
	fmt.Println(total, len(keep))
}
