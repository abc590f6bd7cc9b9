package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// fakeEncoder writes sum(tokens of sequence s) + s into Pooled[s] and the
// token ids into Hidden, so a result identifies its input. It can block until
// released, honour or ignore cancellation, fail or panic.
type fakeEncoder struct {
	gate      chan struct{} // if non-nil, Encode waits for a receive on it (or ctx)
	ignoreCtx bool          // keep waiting on gate even when ctx is cancelled
	fail      error
	panicMsg  string
	started   chan struct{} // if non-nil, gets a send when Encode starts
	calls     atomic.Int64
}

func (f *fakeEncoder) Encode(ctx context.Context, b *Batch, out *Outputs) error {
	f.calls.Add(1)
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.gate != nil {
		if f.ignoreCtx {
			<-f.gate
		} else {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	if f.fail != nil {
		return f.fail
	}
	for i, t := range b.Tokens {
		if out.Hidden != nil {
			out.Hidden[i] = float32(t)
		}
	}
	for s := 0; s < b.NumSeqs(); s++ {
		sum := 0
		for _, t := range b.Tokens[b.CuSeqlens[s]:b.CuSeqlens[s+1]] {
			sum += int(t)
		}
		if out.Pooled != nil {
			out.Pooled[s] = float32(sum + s)
		}
	}
	return nil
}

func batchOf(tokens ...int32) *Batch {
	return &Batch{Tokens: tokens, CuSeqlens: []int32{0, int32(len(tokens))}}
}

// counter counts completion callbacks per request.
type counter struct {
	mu sync.Mutex
	n  map[*Request]int
}

func (c *counter) done(r *Request) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[*Request]int{}
	}
	c.n[r]++
	c.mu.Unlock()
}

func (c *counter) count(r *Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

func codeOf(err error) status.Code { return status.CodeOf(err) }

// counts keeps the request and batch counters of a snapshot.
func counts(s StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Submitted: s.Submitted, Completed: s.Completed, Failed: s.Failed, Cancelled: s.Cancelled, Batches: s.Batches, Tokens: s.Tokens}
}

func TestAsyncBasic(t *testing.T) {
	tests := []struct {
		name     string
		enc      *fakeEncoder
		deliver  func() error
		want     status.Code
		wantPool float32
	}{
		{name: "ok", enc: &fakeEncoder{}, want: status.OK, wantPool: 6},
		{name: "encoder error", enc: &fakeEncoder{fail: status.Errorf(status.OutOfRange, "token id too large")}, want: status.OutOfRange},
		{name: "plain error is internal", enc: &fakeEncoder{fail: errors.New("boom")}, want: status.Internal},
		{name: "encoder panic", enc: &fakeEncoder{panicMsg: "kaboom"}, want: status.Internal},
		{name: "deliver ok", enc: &fakeEncoder{}, deliver: func() error { return nil }, want: status.OK, wantPool: 6},
		{name: "deliver error", enc: &fakeEncoder{}, deliver: func() error { return status.Errorf(status.BufferTooSmall, "x") }, want: status.BufferTooSmall},
		{name: "deliver panic", enc: &fakeEncoder{}, deliver: func() error { panic("oops") }, want: status.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st Stats
			a := NewAsync(AsyncOptions{Stats: &st})
			defer a.Close()
			tg := a.Target(tc.enc)
			var c counter
			pooled := make([]float32, 1)
			hidden := make([]float32, 3)
			r, err := tg.Submit(batchOf(1, 2, 3), &Outputs{Pooled: pooled, Hidden: hidden}, SubmitOptions{Done: c.done, Deliver: tc.deliver})
			if err != nil {
				t.Fatal(err)
			}
			if got := codeOf(r.Wait(-1)); got != tc.want {
				t.Fatalf("result %v, want %v (%v)", got, tc.want, r.Err())
			}
			tg.Close() // waits for the callback
			if n := c.count(r); n != 1 {
				t.Fatalf("callback ran %d times", n)
			}
			if done, err := r.Poll(); !done || codeOf(err) != tc.want {
				t.Fatalf("poll = %v, %v", done, err)
			}
			if tc.want == status.OK && (pooled[0] != tc.wantPool || hidden[2] != 3) {
				t.Fatalf("outputs %v %v", pooled, hidden)
			}
			s := counts(a.Stats())
			want := StatsSnapshot{Submitted: 1, Batches: 1}
			switch tc.want {
			case status.OK:
				want.Completed, want.Tokens = 1, 3
			default:
				want.Failed = 1
				if tc.deliver != nil {
					want.Tokens = 3 // the batch itself succeeded
				}
			}
			if s != want {
				t.Fatalf("stats %+v, want %+v", s, want)
			}
		})
	}
}

func TestAsyncInputCopied(t *testing.T) {
	gate := make(chan struct{})
	a := NewAsync(AsyncOptions{Lanes: 1})
	defer a.Close()
	tg := a.Target(&fakeEncoder{gate: gate})
	b := batchOf(5, 6, 7)
	types := []int32{0, 0, 0}
	seeds := []uint64{9}
	b.TokenTypes, b.Seeds = types, seeds
	pooled := make([]float32, 1)
	r, err := tg.Submit(b, &Outputs{Pooled: pooled}, SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Tokens[0], b.Tokens[1], b.Tokens[2] = 100, 100, 100 // must not be seen
	b.CuSeqlens[1] = 1
	close(gate)
	if err := r.Wait(-1); err != nil {
		t.Fatal(err)
	}
	if pooled[0] != 18 {
		t.Fatalf("encoder saw the caller's later writes: pooled %v", pooled[0])
	}
}

func TestAsyncBusyAndCancel(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan struct{}, 8)
	enc := &fakeEncoder{gate: gate, started: started}
	var st Stats
	a := NewAsync(AsyncOptions{Lanes: 1, QueueCapacity: 2, Stats: &st})
	defer a.Close()
	tg := a.Target(enc)
	var c counter
	out := func() *Outputs { return &Outputs{Pooled: make([]float32, 1)} }

	running, err := tg.Submit(batchOf(1), out(), SubmitOptions{Done: c.done})
	if err != nil {
		t.Fatal(err)
	}
	<-started // the worker holds it; the queue is empty
	q1, err1 := tg.Submit(batchOf(2), out(), SubmitOptions{Done: c.done})
	q2, err2 := tg.Submit(batchOf(3), out(), SubmitOptions{})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := tg.Submit(batchOf(4), out(), SubmitOptions{}); codeOf(err) != status.Busy {
		t.Fatalf("full queue: %v, want BUSY", err)
	}
	if s := a.Stats(); s.QueueDepth != 2 || s.Submitted != 3 {
		t.Fatalf("stats %+v", s)
	}

	t.Run("wait times out", func(t *testing.T) {
		for _, d := range []time.Duration{0, time.Millisecond} {
			if err := q1.Wait(d); codeOf(err) != status.Timeout {
				t.Fatalf("Wait(%v) = %v, want TIMEOUT", d, err)
			}
		}
		if done, _ := q1.Poll(); done {
			t.Fatal("poll says done")
		}
	})
	t.Run("cancel queued", func(t *testing.T) {
		q1.Cancel()
		if err := q1.Wait(-1); codeOf(err) != status.Cancelled {
			t.Fatalf("got %v", err)
		}
		q1.Cancel() // no-op after completion
		q2.Cancel()
		if err := q2.Wait(time.Second); codeOf(err) != status.Cancelled {
			t.Fatalf("got %v", err)
		}
		if s := a.Stats(); s.QueueDepth != 0 {
			t.Fatalf("queue depth %d after cancels", s.QueueDepth)
		}
	})
	t.Run("cancel running", func(t *testing.T) {
		running.Cancel()
		if err := running.Wait(-1); codeOf(err) != status.Cancelled {
			t.Fatalf("got %v", err)
		}
	})
	tg.Close()
	for _, r := range []*Request{running, q1} {
		if n := c.count(r); n != 1 {
			t.Fatalf("callback ran %d times", n)
		}
	}
	if enc.calls.Load() != 1 {
		t.Fatalf("encoder ran %d times; cancelled queued requests must not run", enc.calls.Load())
	}
	if s := a.Stats(); s.Cancelled != 3 || s.Completed != 0 || s.Failed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A cancel that arrives while the encoder runs wins, even if the encoder
// ignores the context and succeeds; Deliver does not run.
func TestAsyncCancelWinsOverSuccess(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	a := NewAsync(AsyncOptions{Lanes: 1})
	defer a.Close()
	tg := a.Target(&fakeEncoder{gate: gate, started: started, ignoreCtx: true})
	delivered := false
	r, err := tg.Submit(batchOf(1), &Outputs{}, SubmitOptions{Deliver: func() error { delivered = true; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.Cancel()
	close(gate)
	if err := r.Wait(-1); codeOf(err) != status.Cancelled {
		t.Fatalf("got %v", err)
	}
	if delivered {
		t.Fatal("Deliver ran for a cancelled request")
	}
}

func TestAsyncShutdown(t *testing.T) {
	tests := []struct {
		name  string
		close func(a *Async, tg *Target)
	}{
		{"target close", func(_ *Async, tg *Target) { tg.Close() }},
		{"async close", func(a *Async, _ *Target) { a.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			gate := make(chan struct{})
			started := make(chan struct{}, 1)
			a := NewAsync(AsyncOptions{Lanes: 1})
			defer a.Close()
			tg := a.Target(&fakeEncoder{gate: gate, started: started})
			other := a.Target(&fakeEncoder{})
			var c counter
			var reqs []*Request
			for i := range 5 {
				r, err := tg.Submit(batchOf(int32(i)), &Outputs{}, SubmitOptions{Done: c.done})
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, r)
			}
			<-started
			tc.close(a, tg)
			for i, r := range reqs {
				done, err := r.Poll()
				if !done || codeOf(err) != status.Shutdown {
					t.Fatalf("request %d: done %v, %v; want SHUTDOWN", i, done, err)
				}
				if n := c.count(r); n != 1 {
					t.Fatalf("request %d: callback ran %d times", i, n)
				}
			}
			if _, err := tg.Submit(batchOf(1), &Outputs{}, SubmitOptions{}); codeOf(err) != status.Shutdown {
				t.Fatalf("submit after close: %v", err)
			}
			r, err := other.Submit(batchOf(1), &Outputs{}, SubmitOptions{})
			if tc.name == "target close" {
				if err != nil || r.Wait(-1) != nil {
					t.Fatalf("another target stopped working: %v", err)
				}
			} else if codeOf(err) != status.Shutdown {
				t.Fatalf("submit to another target after Async.Close: %v", err)
			}
			a.Close()
			a.Close() // idempotent
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > base {
				t.Fatalf("%d goroutines after close, %d before", g, base)
			}
		})
	}
}

// Callbacks may call back into the Async: submit, cancel themselves, wait.
func TestAsyncReentrantCallback(t *testing.T) {
	a := NewAsync(AsyncOptions{})
	defer a.Close()
	tg := a.Target(&fakeEncoder{})
	var wg sync.WaitGroup
	var second atomic.Pointer[Request]
	wg.Add(2)
	_, err := tg.Submit(batchOf(1), &Outputs{}, SubmitOptions{Done: func(r *Request) {
		defer wg.Done()
		r.Cancel() // completed: no-op
		if err := r.Wait(-1); err != nil {
			t.Errorf("wait in callback: %v", err)
		}
		r2, err := tg.Submit(batchOf(2), &Outputs{}, SubmitOptions{Done: func(*Request) { wg.Done() }})
		if err != nil {
			t.Errorf("submit in callback: %v", err)
			wg.Done()
			return
		}
		second.Store(r2)
	}})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if r2 := second.Load(); r2 == nil || r2.Wait(-1) != nil {
		t.Fatal("the request submitted from a callback did not complete")
	}
}

// Many goroutines submit, cancel and wait concurrently: every accepted
// request completes exactly once, with the right output or CANCELLED, and
// the counters add up.
func TestAsyncStress(t *testing.T) {
	const goroutines, perG = 16, 300
	var st Stats
	a := NewAsync(AsyncOptions{QueueCapacity: 64, Stats: &st})
	tg := a.Target(&fakeEncoder{})
	var c counter
	var accepted, busy atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range perG {
				n := 1 + rng.IntN(8)
				toks := make([]int32, n)
				sum := 0
				for k := range toks {
					toks[k] = int32(rng.IntN(1000))
					sum += int(toks[k])
				}
				pooled := make([]float32, 1)
				opts := SubmitOptions{}
				if i%2 == 0 {
					opts.Done = c.done
				}
				r, err := tg.Submit(batchOf(toks...), &Outputs{Pooled: pooled}, opts)
				if codeOf(err) == status.Busy {
					busy.Add(1)
					runtime.Gosched()
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				accepted.Add(1)
				if rng.IntN(5) == 0 {
					r.Cancel()
				}
				switch err := r.Wait(-1); codeOf(err) {
				case status.OK:
					if pooled[0] != float32(sum) {
						t.Errorf("wrong output %v, want %v", pooled[0], sum)
					}
				case status.Cancelled:
				default:
					t.Errorf("unexpected result %v", err)
				}
			}
		}()
	}
	wg.Wait()
	a.Close()
	c.mu.Lock()
	for r, n := range c.n {
		if n != 1 {
			t.Errorf("request %p: callback ran %d times", r, n)
		}
	}
	c.mu.Unlock()
	s := a.Stats()
	if int64(s.Submitted) != accepted.Load() || s.Completed+s.Cancelled != s.Submitted || s.Failed != 0 || s.QueueDepth != 0 {
		t.Fatalf("stats %+v, accepted %d", s, accepted.Load())
	}
	t.Logf("accepted %d, busy %d, cancelled %d", accepted.Load(), busy.Load(), s.Cancelled)
}

// With a real *Model: bad requests fail at Submit (the model validates up
// front), and every asynchronous result is bit-identical to Encode's.
func TestAsyncWithModel(t *testing.T) {
	e := newTestEngine(t, "off", 2)
	cfg := tinyConfig(loader.FamilyBERT, 32, 2, false)
	m, err := e.Load(testmodel.Random(cfg, 1, 0.1))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := NewAsync(AsyncOptions{})
	defer a.Close()
	tg := a.Target(m)

	good := batchOf(1, 2, 3, 4)
	bad := []struct {
		name string
		b    *Batch
		out  *Outputs
		want status.Code
	}{
		{"token id >= vocab", batchOf(1, 50), &Outputs{Pooled: make([]float32, 32)}, status.OutOfRange},
		{"negative id", batchOf(-1), &Outputs{Pooled: make([]float32, 32)}, status.OutOfRange},
		{"non-monotonic cu_seqlens", &Batch{Tokens: []int32{1, 2, 3}, CuSeqlens: []int32{0, 2, 1, 3}}, &Outputs{}, status.InvalidArgument},
		{"pooled too small", good, &Outputs{Pooled: make([]float32, 31)}, status.BufferTooSmall},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tg.Submit(tc.b, tc.out, SubmitOptions{}); status.CodeOf(err) != tc.want {
				t.Fatalf("Submit = %v, want %v", err, tc.want)
			}
		})
	}
	if s := a.Stats(); s.Submitted != 0 {
		t.Fatalf("rejected requests were counted: %+v", s)
	}

	rng := rand.New(rand.NewPCG(7, 7))
	type job struct {
		c    encCase
		want []float32
		out  Outputs
		r    *Request
	}
	var jobs []*job
	for range 40 {
		lens := []int{1 + rng.IntN(40), 1 + rng.IntN(5)}
		c := randomBatch(rng, cfg, lens)
		b := &Batch{Tokens: c.tokens, CuSeqlens: c.cu, TokenTypes: c.types, Seeds: c.seeds}
		want := make([]float32, len(c.tokens)*cfg.Hidden)
		if err := m.Encode(context.Background(), b, &Outputs{Hidden: want}); err != nil {
			t.Fatal(err)
		}
		j := &job{c: c, want: want, out: Outputs{Hidden: make([]float32, len(want))}}
		if j.r, err = tg.Submit(b, &j.out, SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	for i, j := range jobs {
		if err := j.r.Wait(-1); err != nil {
			t.Fatal(err)
		}
		if !bitEqual(j.out.Hidden, j.want) {
			t.Fatalf("request %d differs from Encode", i)
		}
	}
}
