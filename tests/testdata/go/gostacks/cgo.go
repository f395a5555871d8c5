//go:build cgo

package main

/*
#include <stdint.h>
static uint64_t c_spin(uint64_t n) {
	volatile uint64_t x = 1;
	for (uint64_t i = 0; i < n; i++)
		x = x * 6364136223846793005ULL + i;
	return x;
}
*/
import "C"

import "sync/atomic"

//go:noinline
func cgoHere() {
	for atomic.LoadInt32(&stop) == 0 {
		shared += uint64(C.c_spin(200000))
	}
}

func init() { extra = append(extra, cgoHere) }
