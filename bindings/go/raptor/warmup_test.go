package raptor

import (
	"context"
	"errors"
	"testing"
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
}
