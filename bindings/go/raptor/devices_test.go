package raptor

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDevices: several devices through the Go binding (issue 10), on CPU
// replicas: bad selections answer their errors; 1, 2 and 3 devices give
// results identical to one device, with one copy of the weights per device
// and the requests counted once over the devices.
func TestDevices(t *testing.T) {
	lib := library(t)
	for _, tc := range []struct {
		name    string
		devices []int
		want    error
	}{
		{"empty", []int{}, ErrInvalidArgument},
		{"repeated", []int{1, 1}, ErrInvalidArgument},
		{"negative", []int{-2}, ErrInvalidArgument},
		{"out of range", []int{0, 64}, ErrOutOfRange},
	} {
		opts := lib.DefaultEngineOptions()
		opts.Backend, opts.Devices = BackendCPU, tc.devices
		if _, err := lib.NewEngine(&opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	ref, err := lib.NewEngine(&EngineOptions{Backend: BackendCPU, MaxBatchTokens: 16384, QueueCapacity: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	rbert, _ := testModels(t, ref)
	rng := rand.New(rand.NewPCG(1, 2))
	var seqs [][]int32
	for range 24 {
		s := make([]int32, 1+rng.IntN(100))
		for i := range s {
			s[i] = int32(5 + rng.IntN(74))
		}
		seqs = append(seqs, s)
	}
	for _, n := range []int{1, 2, 3} {
		opts := lib.DefaultEngineOptions()
		opts.Backend, opts.Threads, opts.MaxBatchTokens = BackendCPU, 2, 64
		for i := range n {
			opts.Devices = append(opts.Devices, i)
		}
		e, err := lib.NewEngine(&opts)
		if err != nil {
			t.Fatal(err)
		}
		bert, _ := testModels(t, e)
		if got, err := e.NumDevices(); err != nil || got != n {
			t.Fatalf("NumDevices = %d, %v; want %d", got, err, n)
		}
		var reqs []*Request
		for _, s := range seqs {
			r, err := bert.Submit(context.Background(), [][]int32{s}, EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, r)
		}
		for i, r := range reqs {
			got, err := r.Wait(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want, err := rbert.Encode(context.Background(), [][]int32{seqs[i]}, EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Pooled[0], want[0]) {
				t.Fatalf("%d devices, request %d: differs from one device", n, i)
			}
		}
		ds, err := e.DeviceStats()
		if err != nil {
			t.Fatal(err)
		}
		var total uint64
		for _, d := range ds {
			total += d.Requests
			if d.WeightBytes <= 0 || d.WeightBytes != ds[0].WeightBytes || d.Failed {
				t.Fatalf("device stats %+v", ds)
			}
		}
		if total != uint64(len(seqs)) {
			t.Fatalf("%d requests over the devices, want %d: %+v", total, len(seqs), ds)
		}
		e.Close()
	}
}
