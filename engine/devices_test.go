package engine

// Several devices in one engine (issue 10), on the CPU backend: N CPU
// replicas stand for N GPUs. Device failures are injected through
// Engine.SetDeviceFault (a sticky fault as the CUDA backend reports it) and,
// for the pipeline alone, through AsyncOptions.DeviceErr.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

func newDevEngine(t testing.TB, devices []int) *Engine {
	t.Helper()
	return newCPUTestEngine(t, "off", 2*max(1, len(devices)), devices)
}

func TestDeviceOptions(t *testing.T) {
	tests := []struct {
		name    string
		devices []int
		all     bool
		device  int
		want    status.Code
		n       int
	}{
		{name: "default one device", n: 1},
		{name: "list of one", devices: []int{0}, n: 1},
		{name: "list of three", devices: []int{2, 0, 1}, n: 3},
		{name: "all devices (cpu: one)", all: true, n: 1},
		{name: "empty list", devices: []int{}, want: status.InvalidArgument},
		{name: "duplicate", devices: []int{0, 1, 0}, want: status.InvalidArgument},
		{name: "negative", devices: []int{0, -1}, want: status.InvalidArgument},
		{name: "out of range", devices: []int{0, MaxDevices}, want: status.OutOfRange},
		{name: "list and all", devices: []int{0}, all: true, want: status.InvalidArgument},
		{name: "negative single device", device: -1, want: status.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.Backend = BackendCPU
			opts.BLAS = "off"
			opts.Devices, opts.AllDevices, opts.Device = tc.devices, tc.all, tc.device
			opts.Log = func(LogLevel, string) {}
			e, err := New(opts)
			if got := status.CodeOf(err); got != tc.want {
				t.Fatalf("New: %v (code %v), want %v", err, got, tc.want)
			}
			if err != nil {
				return
			}
			defer e.Close()
			if e.NumDevices() != tc.n {
				t.Fatalf("NumDevices = %d, want %d", e.NumDevices(), tc.n)
			}
			infos := e.Devices()
			for i, d := range infos {
				if d.Index != i || d.Failed != nil || d.WeightBytes != 0 {
					t.Fatalf("device %d: %+v", i, d)
				}
				if tc.devices != nil && d.Ordinal != tc.devices[i] {
					t.Fatalf("device %d ordinal %d, want %d", i, d.Ordinal, tc.devices[i])
				}
			}
		})
	}
}

// devReq is one request of a multi-device run and what it must produce.
type devReq struct {
	b      Batch
	hidden []float32
	pooled []float32
	want   []float32 // pooled, from a one-device engine
	wantH  []float32
}

// submitDevReqs submits every request (hidden states and mean-pooled
// vectors into its own buffers), counting completions in cnt.
func submitDevReqs(t testing.TB, tg *Target, reqs []*devReq, cnt *counter) []*Request {
	t.Helper()
	var rs []*Request
	for _, q := range reqs {
		r, err := tg.Submit(&q.b, &Outputs{Hidden: q.hidden, Pooled: q.pooled, Pooling: PoolMean}, SubmitOptions{Done: cnt.done})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

func devRequests(t testing.TB, m *Model, cfg loader.Config, n int, seed uint64) []*devReq {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	var out []*devReq
	for i := 0; i < n; i++ {
		nseq := 1 + r.IntN(2)
		lens := make([]int, nseq)
		maxLen := 200
		if raceEnabled {
			maxLen = 60 // the race detector makes the CPU references slow
		}
		for s := range lens {
			lens[s] = 1 + r.IntN(maxLen)
		}
		c := randomBatch(r, cfg, lens)
		q := &devReq{b: Batch{Tokens: c.tokens, CuSeqlens: c.cu, TokenTypes: c.types, Seeds: c.seeds}}
		q.hidden = make([]float32, len(c.tokens)*cfg.Hidden)
		q.pooled = make([]float32, nseq*cfg.Hidden)
		q.wantH = make([]float32, len(q.hidden))
		q.want = make([]float32, len(q.pooled))
		if err := m.Encode(context.Background(), &q.b, &Outputs{Hidden: q.wantH, Pooled: q.want, Pooling: PoolMean}); err != nil {
			t.Fatal(err)
		}
		out = append(out, q)
	}
	return out
}

// TestMultiDeviceEncode runs the same requests on engines of 1, 2 and 3
// CPU devices, synchronously and through Async: every request completes
// exactly once with outputs bit-identical to one device's; each device
// holds one copy of the weights, and Async spreads the batches over all of
// them.
func TestMultiDeviceEncode(t *testing.T) {
	cfg := tinyConfig(loader.FamilyBigBird, 32, 2, true)
	w := testmodel.Random(cfg, 7, 0.05)
	ref := newDevEngine(t, nil)
	rm, err := ref.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	nreq, budget := 48, 300
	if raceEnabled {
		nreq, budget = 24, 80
	}
	reqs := devRequests(t, rm, cfg, nreq, 11)
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("devices=%d", n), func(t *testing.T) {
			devs := make([]int, n)
			for i := range devs {
				devs[i] = n - 1 - i // any order
			}
			e := newDevEngine(t, devs)
			m, err := e.Load(w)
			if err != nil {
				t.Fatal(err)
			}
			infos := e.Devices()
			for _, d := range infos {
				if d.WeightBytes <= 0 || d.WeightBytes != infos[0].WeightBytes {
					t.Fatalf("weights per device: %+v", infos)
				}
			}
			// Synchronous encodes, concurrently: spread by load.
			var wg sync.WaitGroup
			for _, q := range reqs[:12] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h := make([]float32, len(q.hidden))
					p := make([]float32, len(q.pooled))
					if err := m.Encode(context.Background(), &q.b, &Outputs{Hidden: h, Pooled: p, Pooling: PoolMean}); err != nil {
						t.Error(err)
						return
					}
					if !slices.Equal(h, q.wantH) || !slices.Equal(p, q.want) {
						t.Error("sync encode differs from one device")
					}
				}()
			}
			wg.Wait()

			a := NewAsync(AsyncOptions{MaxBatchTokens: budget, Devices: e.NumDevices(), DeviceErr: e.DeviceErr, Lanes: 1})
			defer a.Close()
			tg := a.Target(m)
			var cnt counter
			rs := submitDevReqs(t, tg, reqs, &cnt)
			for i, r := range rs {
				if err := r.Wait(time.Minute); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			a.Close()
			for i, r := range rs {
				if c := cnt.count(r); c != 1 {
					t.Fatalf("request %d completed %d times", i, c)
				}
				q := reqs[i]
				if !slices.Equal(q.hidden, q.wantH) || !slices.Equal(q.pooled, q.want) {
					t.Fatalf("request %d: outputs differ from one device", i)
				}
			}
			ds := a.DeviceStats()
			var total uint64
			for _, d := range ds {
				if d.Batches == 0 {
					t.Errorf("device %d ran no batch: %+v", d.Index, ds)
				}
				total += d.Requests
			}
			if total != uint64(len(reqs)) {
				t.Fatalf("devices ran %d requests, want %d: %+v", total, len(reqs), ds)
			}
			t.Logf("%d devices: %+v", n, ds)
		})
	}
}

// TestMultiDeviceFailover fails one device of 2 and 3 with a sticky fault
// while its batch computes: that batch's requests fail with DeviceFailed,
// every other request completes exactly once on the healthy devices with
// the right outputs, and the failed device takes no more work. Then the
// other devices fail: every pending and new call answers DeviceFailed.
func TestMultiDeviceFailover(t *testing.T) {
	cfg := tinyConfig(loader.FamilyBERT, 32, 2, false)
	w := testmodel.Random(cfg, 9, 0.05)
	ref := newDevEngine(t, nil)
	rm, err := ref.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("devices=%d", n), func(t *testing.T) {
			nreq := 40
			if raceEnabled {
				nreq = 20
			}
			reqs := devRequests(t, rm, cfg, nreq, uint64(n))
			devs := make([]int, n)
			for i := range devs {
				devs[i] = i
			}
			e := newDevEngine(t, devs)
			m, err := e.Load(w)
			if err != nil {
				t.Fatal(err)
			}
			entered := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			e.SetDeviceFault(1, func() error {
				once.Do(func() { close(entered) })
				<-release
				return status.Errorf(status.DeviceFailed, "injected: illegal address on device 1")
			})
			a := NewAsync(AsyncOptions{MaxBatchTokens: 100, Devices: n, DeviceErr: e.DeviceErr, Lanes: 2})
			defer a.Close()
			tg := a.Target(m)
			var cnt counter
			rs := submitDevReqs(t, tg, reqs, &cnt)
			<-entered
			close(release)
			var ok, failed int
			for i, r := range rs {
				err := r.Wait(time.Minute)
				switch status.CodeOf(err) {
				case status.OK:
					ok++
					q := reqs[i]
					if !slices.Equal(q.hidden, q.wantH) || !slices.Equal(q.pooled, q.want) {
						t.Fatalf("request %d: outputs differ from one device", i)
					}
				case status.DeviceFailed:
					failed++
				default:
					t.Fatalf("request %d: %v", i, err)
				}
			}
			ds := a.DeviceStats()
			if !ds[1].Failed || e.DeviceErr(1) == nil || e.Devices()[1].Failed == nil {
				t.Fatalf("device 1 not failed: %+v", ds)
			}
			if uint64(failed) != ds[1].FailedInFlight || failed == 0 || failed > 2*len(reqs)/n {
				t.Fatalf("%d failed, device stats %+v", failed, ds)
			}
			t.Logf("%d ok, %d failed in flight, stats %+v", ok, failed, ds)
			// The healthy devices serve on, synchronously and asynchronously.
			q := reqs[0]
			for range 2 * n {
				if err := m.Encode(context.Background(), &q.b, &Outputs{Hidden: q.hidden, Pooled: q.pooled, Pooling: PoolMean}); err != nil {
					t.Fatal(err)
				}
			}
			// A model loaded now skips the failed device and serves on the others.
			before1 := e.Devices()[1].WeightBytes
			m2, err := e.Load(w)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.Devices()[1].WeightBytes; got != before1 {
				t.Fatalf("the failed device got weights: %d -> %d", before1, got)
			}
			if err := m2.Encode(context.Background(), &q.b, &Outputs{Pooled: make([]float32, len(q.pooled)), Pooling: PoolMean}); err != nil {
				t.Fatal(err)
			}
			m2.Close()
			before := ds[1].Batches
			r, err := tg.Submit(&q.b, &Outputs{Pooled: q.pooled, Pooling: PoolMean}, SubmitOptions{Done: cnt.done})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Wait(time.Minute); err != nil {
				t.Fatal(err)
			}
			if got := a.DeviceStats()[1].Batches; got != before {
				t.Fatalf("the failed device ran %d more batches", got-before)
			}
			// Every device fails: pending requests and new calls get DeviceFailed.
			gate := make(chan struct{})
			for i := range n {
				if i != 1 {
					e.SetDeviceFault(i, func() error {
						<-gate
						return status.Errorf(status.DeviceFailed, "injected: device %d lost", i)
					})
				}
			}
			var pend []*Request
			for _, q := range reqs[:10] {
				r, err := tg.Submit(&q.b, &Outputs{Pooled: q.pooled, Pooling: PoolMean}, SubmitOptions{Done: cnt.done})
				if err != nil {
					t.Fatal(err)
				}
				pend = append(pend, r)
			}
			close(gate)
			for i, r := range pend {
				if err := r.Wait(time.Minute); status.CodeOf(err) != status.DeviceFailed {
					t.Fatalf("pending request %d: %v, want DEVICE_FAILED", i, err)
				}
			}
			if _, err := tg.Submit(&q.b, &Outputs{Pooled: q.pooled, Pooling: PoolMean}, SubmitOptions{}); status.CodeOf(err) != status.DeviceFailed {
				t.Fatalf("submit after every device failed: %v", err)
			}
			if err := m.Encode(context.Background(), &q.b, &Outputs{Pooled: q.pooled}); status.CodeOf(err) != status.DeviceFailed {
				t.Fatalf("encode after every device failed: %v", err)
			}
			a.Close()
			for _, r := range append(rs, pend...) {
				if c := cnt.count(r); c != 1 {
					t.Fatalf("a request completed %d times", c)
				}
			}
		})
	}
}

// TestAsyncDeviceRequeue: a batch formed for a device that fails before the
// batch starts goes back to the queue and runs on another device; none of
// its requests fails or runs twice.
func TestAsyncDeviceRequeue(t *testing.T) {
	var failed atomic.Bool
	enc := &fakeEncoder{}
	var devOf sync.Map // *Batch tokens[0] -> device
	a := NewAsync(AsyncOptions{Devices: 2, Lanes: 1, MaxBatchTokens: 4,
		DeviceErr: func(i int) error {
			if i == 1 && failed.Load() {
				return status.Errorf(status.DeviceFailed, "injected")
			}
			return nil
		}})
	defer a.Close()
	a.beforeCompute = func(b *batch) {
		devOf.Store(b.ins[0].Tokens[0], b.dev)
		if b.dev == 1 {
			failed.Store(true)
		}
	}
	tg := a.Target(enc)
	var cnt counter
	var rs []*Request
	outs := make([][]float32, 20)
	for i := range 20 {
		outs[i] = make([]float32, 1)
		r, err := tg.Submit(batchOf(int32(i+1), 1, 1, 1), &Outputs{Pooled: outs[i]}, SubmitOptions{Done: cnt.done})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	for i, r := range rs {
		if err := r.Wait(time.Minute); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if outs[i][0] != float32(i+4) {
			t.Fatalf("request %d: pooled %v", i, outs[i][0])
		}
	}
	a.Close()
	for i, r := range rs {
		if c := cnt.count(r); c != 1 {
			t.Fatalf("request %d completed %d times", i, c)
		}
	}
	ds := a.DeviceStats()
	if !ds[1].Failed || ds[1].Requeued == 0 || ds[1].Batches != 0 || ds[0].Requests != 20 {
		t.Fatalf("device stats %+v", ds)
	}
	if enc.calls.Load() != 20 {
		t.Fatalf("encoder ran %d times, want 20", enc.calls.Load())
	}
}

// TestAsyncDevicesExactlyOnceStress: 3 devices, a stream of requests from
// several goroutines with random cancels and deadlines; devices fail at
// random moments (before a batch starts, or while it computes). Every
// accepted request completes exactly once, with the right outputs when it
// succeeds, and only with OK, CANCELLED, DEADLINE_EXCEEDED or
// DEVICE_FAILED.
func TestAsyncDevicesExactlyOnceStress(t *testing.T) {
	for round := range 4 {
		var down [3]atomic.Bool
		var batches atomic.Int64
		enc := &devFaultEncoder{down: &down}
		a := NewAsync(AsyncOptions{Devices: 3, Lanes: 2, MaxBatchTokens: 64, QueueCapacity: 100000,
			DeviceErr: func(i int) error {
				if down[i].Load() {
					return status.Errorf(status.DeviceFailed, "injected: device %d down", i)
				}
				return nil
			}})
		a.beforeCompute = func(b *batch) {
			// Fail device 1 a while in, and device 2 later (round 3: device 0 too: all down).
			n := batches.Add(1)
			if n == 40 {
				down[1].Store(true)
			}
			if n == 120 {
				down[2].Store(true)
			}
			if round == 3 && n == 200 {
				down[0].Store(true)
			}
		}
		tg := a.Target(enc)
		var cnt counter
		var mu sync.Mutex
		type sub struct {
			r   *Request
			out []float32
			sum int
		}
		var subs []sub
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				for i := range 100 {
					n := 1 + rng.IntN(20)
					toks := make([]int32, n)
					sum := 0
					for j := range toks {
						toks[j] = int32(rng.IntN(50))
						sum += int(toks[j])
					}
					out := make([]float32, 1)
					so := SubmitOptions{Done: cnt.done}
					if rng.IntN(10) == 0 {
						so.Deadline = time.Now().Add(time.Duration(rng.IntN(2000)) * time.Microsecond)
					}
					r, err := tg.Submit(&Batch{Tokens: toks, CuSeqlens: []int32{0, int32(n)}}, &Outputs{Pooled: out}, so)
					if err != nil {
						if c := status.CodeOf(err); c != status.DeviceFailed && c != status.DeadlineExceeded {
							t.Errorf("submit: %v", err)
						}
						continue
					}
					if i%7 == 0 {
						r.Cancel()
					}
					mu.Lock()
					subs = append(subs, sub{r, out, sum})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		codes := map[status.Code]int{}
		for _, s := range subs {
			err := s.r.Wait(time.Minute)
			c := status.CodeOf(err)
			codes[c]++
			switch c {
			case status.OK:
				if s.out[0] != float32(s.sum) {
					t.Fatalf("wrong output %v, want %d", s.out[0], s.sum)
				}
			case status.Cancelled, status.DeadlineExceeded, status.DeviceFailed:
			default:
				t.Fatalf("request completed with %v", err)
			}
		}
		a.Close()
		for _, s := range subs {
			if c := cnt.count(s.r); c != 1 {
				t.Fatalf("request completed %d times", c)
			}
		}
		ds := a.DeviceStats()
		var lost uint64
		for _, d := range ds {
			lost += d.FailedInFlight
		}
		t.Logf("round %d: %d requests, results %v, devices %+v", round, len(subs), codes, ds)
	}
}

// devFaultEncoder sums its tokens; a batch on a device that is down fails
// with DeviceFailed, as a sticky GPU fault would.
type devFaultEncoder struct{ down *[3]atomic.Bool }

func (f *devFaultEncoder) Encode(ctx context.Context, b *Batch, out *Outputs) error {
	if i, ok := ctx.Value(deviceKey{}).(int); ok && f.down[i].Load() {
		return status.Errorf(status.DeviceFailed, "injected: device %d faulted mid-batch", i)
	}
	time.Sleep(20 * time.Microsecond)
	if i, ok := ctx.Value(deviceKey{}).(int); ok && f.down[i].Load() {
		return status.Errorf(status.DeviceFailed, "injected: device %d faulted mid-batch", i)
	}
	for s := 0; s < b.NumSeqs(); s++ {
		sum := 0
		for _, t := range b.Tokens[b.CuSeqlens[s]:b.CuSeqlens[s+1]] {
			sum += int(t)
		}
		out.Pooled[s] = float32(sum)
	}
	return nil
}
