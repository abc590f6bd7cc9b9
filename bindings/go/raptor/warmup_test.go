package raptor

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWarmup: Model.Warmup through the ABI (raptor_model_warmup): its
// bad options answer their errors; a warm-up runs one batch on the CPU, two
// per batch class on the GPU (RAPTOR_TEST_BACKEND=cuda), and the model
// encodes after it.
func TestWarmup(t *testing.T) {
	lib := library(t)
	opts := lib.DefaultEngineOptions()
	opts.Backend = BackendCPU
	if onGPU {
		opts.Backend = BackendCUDA
	}
	e, err := lib.NewEngine(&opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	bert, _ := testModels(t, e)
	for _, tc := range []struct {
		name string
		o    WarmupOptions
		want error
	}{
		{"negative max tokens", WarmupOptions{MaxTokens: -1}, ErrInvalidArgument},
		{"no output", WarmupOptions{Pooling: PoolingNone}, ErrInvalidArgument},
		{"unknown pooling", WarmupOptions{Pooling: 9}, ErrInvalidArgument},
	} {
		if _, err := bert.Warmup(tc.o); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, o := range []WarmupOptions{{}, {MaxTokens: 200, Pooling: PoolingNone, Hidden: true, TokenTypes: true, Seeds: true}} {
		n, err := bert.Warmup(o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if (!onGPU && n != 1) || (onGPU && (n < 2 || n%2 != 0)) {
			t.Fatalf("%+v: %d batches (GPU: %v)", o, n, onGPU)
		}
	}
	seqs := [][]int32{{2, 7, 9, 3}, {2, 11, 3}}
	want, err := bert.Encode(context.Background(), seqs, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 2 {
		t.Fatalf("%d pooled vectors", len(want))
	}
	bert.Close()
	if _, err := bert.Warmup(WarmupOptions{}); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("warm-up of a closed model: %v", err)
	}
	if onGPU {
		warmupStopsAtShutdown(t, lib)
	}
}

// warmupStopsAtShutdown: a GPU warm-up (hundreds of batches) in progress
// returns ErrShutdown soon after raptor_engine_shutdown starts.
func warmupStopsAtShutdown(t *testing.T, lib *Library) {
	opts := lib.DefaultEngineOptions()
	opts.Backend = BackendCUDA
	var full time.Duration // the warm-up without a shutdown
	for _, shutdown := range []bool{false, true} {
		e, err := lib.NewEngine(&opts)
		if err != nil {
			t.Fatal(err)
		}
		bert, _ := testModels(t, e)
		var n int64
		var werr error
		done := make(chan struct{})
		t0 := time.Now()
		go func() {
			defer close(done)
			n, werr = bert.Warmup(WarmupOptions{})
		}()
		if shutdown {
			time.Sleep(50 * time.Millisecond)
			if err := e.Shutdown(ShutdownDrain, time.Second); err != nil {
				t.Fatal(err)
			}
		}
		<-done
		took := time.Since(t0)
		t.Logf("warm-up (shutdown after 50 ms: %v): %d batches, %v, %v", shutdown, n, took.Round(time.Millisecond), werr)
		if !shutdown {
			full = took
		}
		switch {
		case !shutdown && (werr != nil || n < 100):
			t.Fatalf("warm-up: %d batches, %v", n, werr)
		case shutdown && full < 300*time.Millisecond:
			t.Logf("the whole warm-up took only %v: too short to stop it on the way", full)
		case shutdown && !errors.Is(werr, ErrShutdown):
			t.Fatalf("warm-up during a shutdown: %d batches, %v; want ErrShutdown", n, werr)
		case shutdown && took > time.Second:
			t.Fatalf("warm-up took %v to stop after the shutdown", took)
		}
		e.Close()
	}
}
