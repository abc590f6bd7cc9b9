package main

import (
	"testing"
	"time"

	"github.com/raptor-infer/raptor/engine"
)

// TestShutdownStopsLongCalls: the context long calls (the warm-up) run
// under ends when the engine's shutdown begins, not before.
func TestShutdownStopsLongCalls(t *testing.T) {
	opts := engine.DefaultOptions()
	opts.Backend = engine.BackendCPU
	opts.Log = func(engine.LogLevel, string) {}
	eng, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := newEngineObj(eng, opts)
	defer e.close() // closes eng too
	select {
	case <-e.stopped.Done():
		t.Fatal("stopped before the shutdown")
	case <-time.After(30 * time.Millisecond):
	}
	e.beginShutdown()
	select {
	case <-e.stopped.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not stopped 5 s after the shutdown began")
	}
	if !e.shut.Load() {
		t.Fatal("shutdown flag not set")
	}
}
