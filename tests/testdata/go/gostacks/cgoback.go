//go:build cgo

package main

// void c_call_back(int n); /* back.c: calls goBack n times */
import "C"

import "sync/atomic"

// goBack is called from C (back.c), on the goroutine that called into C.
//
//export goBack
func goBack() { backHere() }

//go:noinline
func backHere() { sink += spin(200000) }

//go:noinline
func cgoBackHere() {
	for atomic.LoadInt32(&stop) == 0 {
		C.c_call_back(4)
	}
}

func init() { extra = append(extra, cgoBackHere) }
