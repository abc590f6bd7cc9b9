package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// streamEncoder is a mergeEncoder on one "stream": its batches run one at a
// time, each taking fixed plus perToken per token, and it says it runs on
// one stream, as the CUDA backend does (oneStreamer).
type streamEncoder struct {
	mergeEncoder
	fixed    time.Duration
	stream   sync.Mutex
	perToken time.Duration
}

func (s *streamEncoder) oneStream() bool { return true }

func (s *streamEncoder) Encode(ctx context.Context, b *Batch, out *Outputs) error {
	s.stream.Lock()
	defer s.stream.Unlock()
	time.Sleep(s.fixed + s.perToken*time.Duration(len(b.Tokens)))
	return s.mergeEncoder.Encode(ctx, b, out)
}

func TestSvcModel(t *testing.T) {
	const fixed, per = 200e-6, 80e-9 // seconds, seconds per cost unit
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	tests := []struct {
		name      string
		costs     []float64
		wantFixed float64 // of predict(0)
		wantPer   float64
		ok        bool
	}{
		{name: "too few batches", costs: []float64{100, 2000, 50}, ok: false},
		{name: "linear fit", costs: []float64{100, 2000, 50, 9000, 700, 128, 4096}, wantFixed: fixed, wantPer: per, ok: true},
		{name: "one size: all fixed", costs: []float64{500, 500, 500, 500, 500}, wantFixed: fixed + per*500, wantPer: 0, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m svcModel
			for _, c := range tc.costs {
				m.add(c, sec(fixed+per*c))
			}
			p0, ok := m.predict(0)
			if ok != tc.ok {
				t.Fatalf("predict ok %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			p1, _ := m.predict(10000)
			gotPer := (p1 - p0).Seconds() / 10000
			if d := p0.Seconds() - tc.wantFixed; d > 1e-8 || d < -1e-8 {
				t.Fatalf("fixed %.9f s, want %.9f", p0.Seconds(), tc.wantFixed)
			}
			if d := gotPer - tc.wantPer; d > 1e-11 || d < -1e-11 {
				t.Fatalf("per cost %.3g s, want %.3g", gotPer, tc.wantPer)
			}
		})
	}
	t.Run("noise never gives negative times", func(t *testing.T) {
		var m svcModel
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			c := float64(rng.IntN(10000))
			m.add(c, sec(rng.Float64()*1e-3))
			for _, q := range []float64{0, 1, 1e6} {
				if p, ok := m.predict(q); ok && p < 0 {
					t.Fatalf("predict(%v) = %v", q, p)
				}
			}
		}
	})
}

// streamFree chains the batches in flight: each starts when it reached its
// lane or when the one before it ends, whichever is later.
func TestStreamFree(t *testing.T) {
	t0 := time.Now()
	ms := time.Millisecond
	fitted := func() svcModel { // 1 ms + 1 us per cost unit
		var m svcModel
		for _, c := range []float64{0, 1000, 2000, 500} {
			m.add(c, ms+time.Duration(c)*time.Microsecond)
		}
		return m
	}
	tests := []struct {
		name string
		d    devState
		want time.Duration // from t0; -1 = zero time
	}{
		{name: "idle", d: devState{svc: fitted()}, want: -1},
		{name: "model not fitted", d: devState{fly: []*batch{{cost: 0, start: t0}}}, want: -1},
		{name: "one running", d: devState{svc: fitted(), fly: []*batch{{cost: 1000, start: t0}}}, want: 2 * ms},
		{name: "queued behind the running one", d: devState{svc: fitted(), fly: []*batch{
			{cost: 0, start: t0}, {cost: 1000, start: t0.Add(ms / 2)}}}, want: 3 * ms},
		{name: "gap: the second reached its lane after the first ended", d: devState{svc: fitted(), fly: []*batch{
			{cost: 0, start: t0}, {cost: 0, formed: t0.Add(5 * ms)}}}, want: 6 * ms},
		{name: "the previous batch ended late", d: devState{svc: fitted(), lastEnd: t0.Add(4 * ms), fly: []*batch{
			{cost: 0, start: t0}}}, want: 5 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := streamFree(&tc.d)
			if tc.want < 0 {
				if !got.IsZero() {
					t.Fatalf("free at %v, want zero", got.Sub(t0))
				}
				return
			}
			if got.Sub(t0) != tc.want {
				t.Fatalf("free at %v, want %v", got.Sub(t0), tc.want)
			}
		})
	}
}

// lengthAware.Next with SchedState.HoldUntil: a one-stream target's batch
// that is not full waits until then (not past a deadline's close); a full
// one, draining, or another device's target closes as before.
func TestLengthAwareNextHold(t *testing.T) {
	now := time.Now()
	ms := time.Millisecond
	gpu := &Target{merge: &mergeEncoder{}, tokenCost: 1, longCost: 100, oneStream: true}
	cpu := &Target{merge: &mergeEncoder{}, tokenCost: 1, longCost: 100}
	predict := func(c float64) time.Duration { return time.Duration(c) * 10 * time.Microsecond }
	type rq struct {
		t        *Target
		tokens   int
		deadline time.Duration // from now; 0 = none
	}
	tests := []struct {
		name     string
		reqs     []rq
		hold     time.Duration // HoldUntil from now; 0 = none
		draining bool
		wantN    int           // requests in the batch; 0 = held
		wantWake time.Duration // when held
	}{
		{name: "no hold: closes at once (queue delay 0)", reqs: []rq{{gpu, 10, 0}}, wantN: 1},
		{name: "held until the stream runs dry", reqs: []rq{{gpu, 10, 0}, {gpu, 20, 0}}, hold: 3 * ms, wantWake: 3 * ms},
		{name: "full budget closes at once", reqs: []rq{{gpu, 60, 0}, {gpu, 50, 0}}, hold: 3 * ms, wantN: 1},
		{name: "draining closes at once", reqs: []rq{{gpu, 10, 0}}, hold: 3 * ms, draining: true, wantN: 1},
		{name: "not a one-stream target", reqs: []rq{{cpu, 10, 0}}, hold: 3 * ms, wantN: 1},
		{name: "a deadline closes it earlier", reqs: []rq{{gpu, 10, 0}, {gpu, 10, 2 * ms}}, hold: 3 * ms,
			wantWake: 2*ms - 2*predict(10)},
		{name: "a deadline already due closes it now", reqs: []rq{{gpu, 10, 0}, {gpu, 100, ms}}, hold: 3 * ms, wantN: 1},
		{name: "hold in the past", reqs: []rq{{gpu, 10, 0}}, hold: -ms, wantN: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewLengthAware()
			for i, q := range tc.reqs {
				r := &Request{t: q.t, tokens: q.tokens, maxLen: q.tokens, cost: float64(q.tokens), seq: uint64(i), submitted: now}
				r.due = r.submitted.Add(DefaultSlack)
				if q.deadline != 0 {
					r.deadline = now.Add(q.deadline)
					r.due = r.deadline
				}
				s.Push(r)
			}
			st := SchedState{Now: now, MaxBatchTokens: 100, Draining: tc.draining, Predict: predict}
			if tc.hold != 0 {
				st.HoldUntil = now.Add(tc.hold)
			}
			got, wake := s.Next(&st)
			if len(got) != tc.wantN {
				t.Fatalf("batch of %d, want %d", len(got), tc.wantN)
			}
			if tc.wantN == 0 && wake.Sub(now) != tc.wantWake {
				t.Fatalf("wake in %v, want %v", wake.Sub(now), tc.wantWake)
			}
		})
	}
}

// On a one-stream encoder, a request that arrives while the stream is busy
// rides with the next arrivals in one batch that closes as the stream runs
// dry (JustInTime), where the eager former closes it alone at once, so that
// the next arrival waits for a third batch. The stream takes 60 ms a batch:
// the requests arrive 10 ms apart, well inside it.
func TestAsyncJustInTime(t *testing.T) {
	for _, jit := range []bool{false, true} {
		t.Run(map[bool]string{false: "eager", true: "just in time"}[jit], func(t *testing.T) {
			enc := &streamEncoder{fixed: 60 * time.Millisecond}
			a := NewAsync(AsyncOptions{Lanes: 3, JustInTime: jit})
			defer a.Close()
			tg := a.Target(enc)
			submit := func(base int32) *Request {
				r, err := tg.Submit(seqBatch(base, 3), &Outputs{Pooled: make([]float32, 1)}, SubmitOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			for i := range svcMinSamples { // the service-time model's first batches, one at a time
				if err := submit(int32(100 * i)).Wait(5 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			first := submit(1000) // runs at once: the stream is idle
			time.Sleep(10 * time.Millisecond)
			second := submit(2000)
			time.Sleep(10 * time.Millisecond)
			third := submit(3000)
			for _, r := range []*Request{first, second, third} {
				if err := r.Wait(5 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			runs := enc.runs()[svcMinSamples:]
			together := slices.ContainsFunc(runs, func(ids []int32) bool {
				return slices.Contains(ids, 2000) && slices.Contains(ids, 3000)
			})
			if together != jit {
				t.Fatalf("batches %v: the second and third requests together %v, want %v", runs, together, jit)
			}
		})
	}
}

// Exactly once under JustInTime: 8 goroutines submit to a one-stream
// encoder with random cancels and deadlines; every request completes once,
// with its own result, its cancellation or DEADLINE_EXCEEDED.
func TestAsyncJustInTimeStress(t *testing.T) {
	enc := &streamEncoder{fixed: 200 * time.Microsecond, perToken: time.Microsecond}
	a := NewAsync(AsyncOptions{Lanes: 3, JustInTime: true, QueueCapacity: 4096})
	tg := a.Target(enc)
	var c counter
	var wg sync.WaitGroup
	var ok, cancelled, expired atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 8))
			for i := range 150 {
				b := seqBatch(int32(g*100000+i*100), 1+rng.IntN(40))
				out := &Outputs{Hidden: make([]float32, 2*len(b.Tokens)), Pooled: make([]float32, 1)}
				opts := SubmitOptions{Done: c.done}
				if rng.IntN(4) == 0 {
					opts.Deadline = time.Now().Add(time.Duration(200+rng.IntN(3000)) * time.Microsecond)
				}
				r, err := tg.Submit(b, out, opts)
				if err != nil {
					t.Error(err)
					return
				}
				if rng.IntN(6) == 0 {
					r.Cancel()
				}
				switch err := r.Wait(10 * time.Second); status.CodeOf(err) {
				case status.OK:
					ok.Add(1)
					want := &Outputs{Hidden: make([]float32, 2*len(b.Tokens)), Pooled: make([]float32, 1)}
					_ = new(mergeEncoder).Encode(context.Background(), b, want)
					if !bitEqual(out.Hidden, want.Hidden) || !bitEqual(out.Pooled, want.Pooled) {
						t.Errorf("request of ids from %d: outputs differ from the request alone", b.Tokens[0])
					}
				case status.Cancelled:
					cancelled.Add(1)
				case status.DeadlineExceeded:
					expired.Add(1)
				default:
					t.Errorf("request completed with %v", err)
				}
				if rng.IntN(3) == 0 {
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	a.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.n) != 8*150 {
		t.Fatalf("%d callbacks, want %d", len(c.n), 8*150)
	}
	for r, n := range c.n {
		if n != 1 {
			t.Fatalf("request %p: callback ran %d times", r, n)
		}
	}
	if s := a.Stats(); s.QueueDepth != 0 {
		t.Fatalf("queue depth %d after close", s.QueueDepth)
	}
	t.Logf("ok %d, cancelled %d, deadline exceeded %d", ok.Load(), cancelled.Load(), expired.Load())
}
