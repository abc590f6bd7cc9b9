package main

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestCancelOnShutdown: the warm-up's context ends soon after the engine's
// shutdown flag is set, and its cancel stops the polling goroutine.
func TestCancelOnShutdown(t *testing.T) {
	var shut atomic.Bool
	ctx, cancel := cancelOnShutdown(context.Background(), &shut)
	defer cancel()
	select {
	case <-ctx.Done():
		t.Fatal("cancelled before the shutdown")
	case <-time.After(30 * time.Millisecond):
	}
	shut.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not cancelled 5 s after the shutdown")
	}

	before := runtime.NumGoroutine()
	var idle atomic.Bool
	for range 20 {
		_, c := cancelOnShutdown(context.Background(), &idle)
		c()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after 20 cancelled watchers, %d before", n, before)
	}
}
