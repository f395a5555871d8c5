//go:build cgo

#include "_cgo_export.h"

/* C calling Go back: Go -> C -> Go on one goroutine (cgocallback). */
void c_call_back(int n)
{
	for (volatile int i = 0; i < n; i++)
		goBack();
}
