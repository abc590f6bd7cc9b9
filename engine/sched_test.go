package engine

import (
	"context"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// mergeEncoder is a fake encoder whose requests can share a batch: token t
// of a sequence gets the hidden state (id, position in its sequence), and a
// pooled vector is the sum of its sequence's ids. It records every batch,
// can block on a gate and can take time in proportion to its tokens.
type mergeEncoder struct {
	gate     chan struct{} // if non-nil, each Encode receives from it first (or ctx ends)
	started  chan int      // if non-nil, gets each batch's token count
	perToken time.Duration // compute time per token (honours ctx)

	mu      sync.Mutex
	batches [][]int32 // the ids of every batch run
}

func (f *mergeEncoder) hiddenSize() int { return 2 }

func (f *mergeEncoder) Encode(ctx context.Context, b *Batch, out *Outputs) error {
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(b.Tokens))
	f.mu.Unlock()
	if f.started != nil {
		f.started <- len(b.Tokens)
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return status.Wrap(status.Cancelled, ctx.Err(), "fake")
		}
	}
	if d := f.perToken * time.Duration(len(b.Tokens)); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return status.Wrap(status.Cancelled, ctx.Err(), "fake")
		}
	}
	hidden := out.Hidden
	if hidden == nil {
		hidden = make([]float32, 2*len(b.Tokens))
	}
	for s := 0; s < b.NumSeqs(); s++ {
		for t := b.CuSeqlens[s]; t < b.CuSeqlens[s+1]; t++ {
			hidden[2*t], hidden[2*t+1] = float32(b.Tokens[t]), float32(t-b.CuSeqlens[s])
		}
	}
	f.fromHidden(b, hidden, out)
	return nil
}

func (f *mergeEncoder) fromHidden(b *Batch, hidden []float32, out *Outputs) {
	if out.Pooled == nil {
		return
	}
	for s := 0; s < b.NumSeqs(); s++ {
		var sum float32
		for t := b.CuSeqlens[s]; t < b.CuSeqlens[s+1]; t++ {
			sum += hidden[2*t]
		}
		out.Pooled[s] = sum
	}
}

func (f *mergeEncoder) runs() [][]int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// seqBatch is a batch of sequences with the given lengths, ids from base.
func seqBatch(base int32, lens ...int) *Batch {
	b := &Batch{CuSeqlens: []int32{0}}
	for _, n := range lens {
		for range n {
			b.Tokens = append(b.Tokens, base)
			base++
		}
		b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
	}
	return b
}

// checkFake checks a mergeEncoder result against the batch alone.
func checkFake(t *testing.T, b *Batch, out *Outputs) {
	t.Helper()
	want := &Outputs{Hidden: make([]float32, 2*len(b.Tokens)), Pooled: make([]float32, b.NumSeqs())}
	if err := new(mergeEncoder).Encode(context.Background(), b, want); err != nil {
		t.Fatal(err)
	}
	if out.Hidden != nil && !bitEqual(out.Hidden, want.Hidden) {
		t.Fatalf("hidden %v, want %v", out.Hidden, want.Hidden)
	}
	if out.Pooled != nil && !bitEqual(out.Pooled, want.Pooled) {
		t.Fatalf("pooled %v, want %v", out.Pooled, want.Pooled)
	}
}

// blockLane submits a request that holds the only lane until the returned
// function is called.
func blockLane(t *testing.T, tg *Target, enc *mergeEncoder) (release func()) {
	t.Helper()
	enc.gate, enc.started = make(chan struct{}), make(chan int, 1000)
	if _, err := tg.Submit(seqBatch(1000, 1), &Outputs{}, SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	<-enc.started
	var once sync.Once
	return func() { once.Do(func() { close(enc.gate) }) }
}

// Requests queued together are merged into batches up to the token budget,
// and every result equals the request's result alone.
func TestSchedulerMerges(t *testing.T) {
	tests := []struct {
		name       string
		budget     int
		lens       [][]int
		wantMerged int // batches after the blocking one, at most
	}{
		{"all in one", 1000, [][]int{{3}, {1, 2}, {5}, {4, 4, 4}, {7}}, 1},
		{"budget splits", 10, [][]int{{4}, {4}, {4}, {4}, {4}, {4}}, 3},
		{"larger than budget runs alone", 8, [][]int{{20}, {2}, {3}}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st Stats
			a := NewAsync(AsyncOptions{Lanes: 1, MaxBatchTokens: tc.budget, Stats: &st})
			defer a.Close()
			enc := &mergeEncoder{}
			tg := a.Target(enc)
			release := blockLane(t, tg, enc)
			type job struct {
				b   *Batch
				out *Outputs
				r   *Request
			}
			var jobs []job
			for i, lens := range tc.lens {
				b := seqBatch(int32(100*i), lens...)
				out := &Outputs{Hidden: make([]float32, 2*len(b.Tokens)), Pooled: make([]float32, b.NumSeqs())}
				if i%2 == 1 {
					out.Hidden = nil
				}
				r, err := tg.Submit(b, out, SubmitOptions{})
				if err != nil {
					t.Fatal(err)
				}
				jobs = append(jobs, job{b, out, r})
			}
			release() // the lane is free: the queue forms batches at once (no queue delay)
			for _, j := range jobs {
				if err := j.r.Wait(10 * time.Second); err != nil {
					t.Fatal(err)
				}
				checkFake(t, j.b, j.out)
			}
			runs := enc.runs()[1:]
			if len(runs) > tc.wantMerged {
				t.Fatalf("%d batches, want at most %d: %v", len(runs), tc.wantMerged, runs)
			}
			for _, r := range runs {
				if len(r) > tc.budget && len(runs) > 1 && len(r) != 20 {
					t.Fatalf("batch of %d tokens over the budget %d", len(r), tc.budget)
				}
			}
			s := a.Stats()
			if s.SchedBatches != uint64(len(runs)+1) || s.SchedRequests != uint64(len(jobs)+1) || s.PaddingRatio != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// Without a full budget, a batch closes when its oldest request has waited
// MaxQueueDelay.
func TestSchedulerQueueDelay(t *testing.T) {
	a := NewAsync(AsyncOptions{Lanes: 1, MaxBatchTokens: 1000, MaxQueueDelay: 30 * time.Millisecond})
	defer a.Close()
	enc := &mergeEncoder{}
	tg := a.Target(enc)
	start := time.Now()
	var reqs []*Request
	for i := range 3 {
		r, err := tg.Submit(seqBatch(int32(i), 2), &Outputs{Pooled: make([]float32, 1)}, SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		if err := r.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("completed after %v, before the queue delay", d)
	}
	if runs := enc.runs(); len(runs) != 1 || len(runs[0]) != 6 {
		t.Fatalf("batches %v, want one of 6 tokens", runs)
	}
}

// Higher priority runs first; within a priority, the earlier deadline, then
// arrival order.
func TestSchedulerPriorityAndDeadlineOrder(t *testing.T) {
	a := NewAsync(AsyncOptions{Lanes: 1, MaxBatchTokens: 1}) // one request per batch
	defer a.Close()
	enc := &mergeEncoder{}
	tg := a.Target(enc)
	release := blockLane(t, tg, enc)
	now := time.Now()
	subs := []struct {
		id       int32
		prio     int32
		deadline time.Duration
	}{
		{1, 0, 0}, {2, 0, 0}, {3, 5, 0}, {4, -1, 0}, {5, 0, time.Hour}, {6, 0, 500 * time.Millisecond}, {7, 5, 0},
	}
	var reqs []*Request
	for _, s := range subs {
		o := SubmitOptions{Priority: s.prio}
		if s.deadline > 0 {
			o.Deadline = now.Add(s.deadline)
		}
		r, err := tg.Submit(seqBatch(s.id, 1), &Outputs{}, o)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	release()
	for _, r := range reqs {
		if err := r.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var order []int32
	for _, b := range enc.runs()[1:] {
		order = append(order, b[0])
	}
	// 3 and 7 (priority 5), then 6 (due in 0.5 s), 1, 2 (due in DefaultSlack,
	// 1 s), 5 (due in an hour), 4 (priority -1).
	if want := []int32{3, 7, 6, 1, 2, 5, 4}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}

// Deadlines: past at submit, expiring in the queue, expiring while the batch
// computes (the request completes at once, its lone batch stops).
func TestSchedulerDeadlines(t *testing.T) {
	var st Stats
	a := NewAsync(AsyncOptions{Lanes: 1, Stats: &st})
	defer a.Close()
	enc := &mergeEncoder{}
	tg := a.Target(enc)

	if _, err := tg.Submit(seqBatch(1, 1), &Outputs{}, SubmitOptions{Deadline: time.Now().Add(-time.Millisecond)}); codeOf(err) != status.DeadlineExceeded {
		t.Fatalf("past deadline: %v", err)
	}

	// In the queue, behind a blocked lane.
	release := blockLane(t, tg, enc)
	var c counter
	start := time.Now()
	r, err := tg.Submit(seqBatch(2, 1), &Outputs{}, SubmitOptions{Deadline: start.Add(20 * time.Millisecond), Done: c.done})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(5 * time.Second); codeOf(err) != status.DeadlineExceeded || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("queued: %v", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 2*time.Second {
		t.Fatalf("expired after %v", d)
	}
	release()

	// While computing: a slow batch.
	slow := &mergeEncoder{perToken: 10 * time.Second, started: make(chan int, 1)}
	tg2 := a.Target(slow)
	start = time.Now()
	r2, err := tg2.Submit(seqBatch(3, 1), &Outputs{}, SubmitOptions{Deadline: start.Add(30 * time.Millisecond), Done: c.done})
	if err != nil {
		t.Fatal(err)
	}
	<-slow.started
	if err := r2.Wait(5 * time.Second); codeOf(err) != status.DeadlineExceeded {
		t.Fatalf("computing: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("expired after %v", d)
	}
	tg.Close()
	tg2.Close()
	if c.count(r) != 1 || c.count(r2) != 1 {
		t.Fatal("callbacks did not run exactly once")
	}
	s := a.Stats()
	if s.CompletedByStatus[status.DeadlineExceeded] != 2 || s.RejectedByStatus[status.DeadlineExceeded] != 1 {
		t.Fatalf("stats by status %v / %v", s.CompletedByStatus, s.RejectedByStatus)
	}
}

// Cancel at every stage before delivery: queued, computing with other
// members (the batch goes on for them), computing alone (the batch stops).
func TestSchedulerCancelStages(t *testing.T) {
	var st Stats
	a := NewAsync(AsyncOptions{Lanes: 1, MaxBatchTokens: 1000, Stats: &st})
	defer a.Close()
	enc := &mergeEncoder{}
	tg := a.Target(enc)
	blockLane(t, tg, enc)
	var c counter
	var reqs []*Request
	var outs []*Outputs
	var bs []*Batch
	for i := range 4 {
		b := seqBatch(int32(10*i), 5)
		o := &Outputs{Hidden: make([]float32, 2*len(b.Tokens)), Pooled: make([]float32, 1)}
		r, err := tg.Submit(b, o, SubmitOptions{Done: c.done})
		if err != nil {
			t.Fatal(err)
		}
		reqs, outs, bs = append(reqs, r), append(outs, o), append(bs, b)
	}
	reqs[0].Cancel() // queued
	if err := reqs[0].Wait(time.Second); codeOf(err) != status.Cancelled {
		t.Fatalf("queued: %v", err)
	}
	enc.gate <- struct{}{} // the blocking batch ends; the other three form one batch
	if n := <-enc.started; n != 15 {
		t.Fatalf("batch of %d tokens, want 15", n)
	}
	reqs[1].Cancel() // computing, with others
	if err := reqs[1].Wait(time.Second); codeOf(err) != status.Cancelled {
		t.Fatalf("computing: %v", err)
	}
	enc.gate <- struct{}{}
	for i := 2; i < 4; i++ {
		if err := reqs[i].Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		checkFake(t, bs[i], outs[i])
	}
	if outs[1].Hidden[0] != 0 {
		t.Fatal("a cancelled request's outputs were written")
	}

	// Alone: the batch stops (the fake returns when its context ends).
	lone, err := tg.Submit(seqBatch(7, 3), &Outputs{Pooled: make([]float32, 1)}, SubmitOptions{Done: c.done})
	if err != nil {
		t.Fatal(err)
	}
	<-enc.started
	lone.Cancel()
	if err := lone.Wait(time.Second); codeOf(err) != status.Cancelled {
		t.Fatalf("alone: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.Snapshot().Batches < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the cancelled batch returns without its gate
	}
	if b := st.Snapshot().Batches; b != 3 {
		t.Fatalf("%d batches ran to their end, want 3", b)
	}
	tg.Close()
	for _, r := range append(reqs, lone) {
		if c.count(r) != 1 {
			t.Fatalf("callback ran %d times", c.count(r))
		}
	}
}

// Backpressure: a full queue answers BUSY at once, or after BlockTimeout, or
// accepts once space frees; an unbounded wait ends with SHUTDOWN.
func TestSchedulerBlockingSubmit(t *testing.T) {
	a := NewAsync(AsyncOptions{Lanes: 1, QueueCapacity: 2})
	defer a.Close()
	enc := &mergeEncoder{}
	tg := a.Target(enc)
	release := blockLane(t, tg, enc)
	defer release()
	var queued []*Request
	for i := range 2 {
		r, err := tg.Submit(seqBatch(int32(i), 1), &Outputs{}, SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, r)
	}
	tests := []struct {
		name    string
		timeout time.Duration
		min     time.Duration
	}{
		{"no wait", 0, 0},
		{"bounded wait", 30 * time.Millisecond, 30 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := tg.Submit(seqBatch(9, 1), &Outputs{}, SubmitOptions{BlockTimeout: tc.timeout})
			if codeOf(err) != status.Busy {
				t.Fatalf("got %v, want BUSY", err)
			}
			if d := time.Since(start); d < tc.min {
				t.Fatalf("BUSY after %v, want >= %v", d, tc.min)
			}
		})
	}
	// A deadline that passes while the submit waits: DEADLINE_EXCEEDED, at the deadline.
	start := time.Now()
	_, err := tg.Submit(seqBatch(8, 1), &Outputs{}, SubmitOptions{BlockTimeout: -1, Deadline: start.Add(30 * time.Millisecond)})
	if codeOf(err) != status.DeadlineExceeded || !strings.Contains(err.Error(), "full queue") {
		t.Fatalf("deadline while blocked: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// Space frees while a submit waits: it is accepted.
	accepted := make(chan error, 1)
	go func() {
		_, err := tg.Submit(seqBatch(10, 1), &Outputs{}, SubmitOptions{BlockTimeout: 10 * time.Second})
		accepted <- err
	}()
	time.Sleep(20 * time.Millisecond)
	queued[0].Cancel()
	if err := <-accepted; err != nil {
		t.Fatalf("blocked submit: %v", err)
	}
	// An unbounded wait ends when the Async shuts down.
	shut := make(chan error, 1)
	go func() {
		_, err := tg.Submit(seqBatch(11, 1), &Outputs{}, SubmitOptions{BlockTimeout: -1})
		shut <- err
	}()
	time.Sleep(20 * time.Millisecond)
	go func() {
		time.Sleep(20 * time.Millisecond)
		release()
	}()
	a.Close()
	if err := <-shut; codeOf(err) != status.Shutdown {
		t.Fatalf("unbounded blocked submit at shutdown: %v", err)
	}
	s := a.Stats()
	if s.RejectedByStatus[status.Busy] != 2 || s.RejectedByStatus[status.Shutdown] != 1 || s.RejectedByStatus[status.DeadlineExceeded] != 1 {
		t.Fatalf("rejections %v", s.RejectedByStatus)
	}
}

// Shutdown drains or cancels, with a status for every request and the
// goroutines gone.
func TestSchedulerShutdown(t *testing.T) {
	tests := []struct {
		name     string
		drain    bool
		timeout  time.Duration
		gated    bool // the encoder blocks until after the timeout
		want     status.Code
		wantErr  status.Code
		minCalls int
	}{
		{"drain", true, -1, false, status.OK, status.OK, 2},
		{"drain times out", true, 50 * time.Millisecond, true, status.Shutdown, status.Timeout, 1},
		{"cancel", false, 0, true, status.Shutdown, status.OK, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			a := NewAsync(AsyncOptions{Lanes: 1, MaxBatchTokens: 4, MaxQueueDelay: time.Hour})
			enc := &mergeEncoder{perToken: time.Millisecond}
			if tc.gated {
				enc.gate = make(chan struct{})
				defer close(enc.gate)
			}
			tg := a.Target(enc)
			var c counter
			var reqs []*Request
			for i := range 10 {
				r, err := tg.Submit(seqBatch(int32(i), 1), &Outputs{Pooled: make([]float32, 1)}, SubmitOptions{Done: c.done})
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, r)
			}
			err := a.Shutdown(tc.drain, tc.timeout)
			if codeOf(err) != tc.wantErr {
				t.Fatalf("Shutdown = %v, want %v", err, tc.wantErr)
			}
			for i, r := range reqs {
				done, err := r.Poll()
				if !done || codeOf(err) != tc.want {
					t.Fatalf("request %d: done %v, %v; want %v", i, done, err, tc.want)
				}
				if c.count(r) != 1 {
					t.Fatalf("request %d: callback ran %d times", i, c.count(r))
				}
			}
			if _, err := tg.Submit(seqBatch(1, 1), &Outputs{}, SubmitOptions{}); codeOf(err) != status.Shutdown {
				t.Fatalf("submit after shutdown: %v", err)
			}
			if err := a.Shutdown(true, -1); err != nil { // idempotent
				t.Fatal(err)
			}
			if len(enc.runs()) < tc.minCalls {
				t.Fatalf("%d batches ran", len(enc.runs()))
			}
			waitGoroutines(t, base)
		})
	}
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines, %d before:\n%s", g, base, buf[:runtime.Stack(buf, true)])
	}
}

// A long request does not hold short ones past their deadlines: it is not
// merged with them when that would make them late, and while it computes
// the second lane serves short batches only.
func TestSchedulerLongDoesNotHoldShort(t *testing.T) {
	a := NewAsync(AsyncOptions{Lanes: 2, MaxBatchTokens: 400})
	defer a.Close()
	enc := &mergeEncoder{perToken: time.Millisecond}
	tg := a.Target(enc)
	warm, err := tg.Submit(seqBatch(0, 20), &Outputs{}, SubmitOptions{}) // measures the rate
	if err != nil || warm.Wait(5*time.Second) != nil {
		t.Fatal(err)
	}
	var longs []*Request
	for i := range 2 {
		r, err := tg.Submit(seqBatch(int32(1000*i), 300), &Outputs{}, SubmitOptions{}) // 0.3 s each
		if err != nil {
			t.Fatal(err)
		}
		longs = append(longs, r)
	}
	time.Sleep(5 * time.Millisecond)
	var shorts []*Request
	for i := range 8 {
		r, err := tg.Submit(seqBatch(int32(5000+10*i), 5), &Outputs{}, SubmitOptions{Deadline: time.Now().Add(150 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		shorts = append(shorts, r)
		time.Sleep(10 * time.Millisecond)
	}
	for i, r := range shorts {
		if err := r.Wait(5 * time.Second); err != nil {
			t.Fatalf("short request %d: %v", i, err)
		}
	}
	for _, r := range longs {
		if err := r.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range enc.runs() {
		if len(b) > 300 {
			t.Fatalf("a batch of %d tokens merged a long request with others", len(b))
		}
	}
}

// The length-aware scheduler on its own: anchor, length classes, budget,
// deadlines, short-only batches.
func TestLengthAwareNext(t *testing.T) {
	now := time.Now()
	tgt := &Target{merge: &mergeEncoder{}, tokenCost: 1, longCost: 100}
	other := &Target{merge: &mergeEncoder{}, tokenCost: 1, longCost: 100}
	type rq struct {
		id       int
		t        *Target
		tokens   int
		prio     int32
		age      time.Duration // submitted this long before now
		deadline time.Duration // from now; 0 = none
	}
	mk := func(q rq) *Request {
		r := &Request{t: q.t, tokens: q.tokens, maxLen: q.tokens, cost: float64(q.tokens), prio: q.prio,
			seq: uint64(q.id), submitted: now.Add(-q.age)}
		r.due = r.submitted.Add(DefaultSlack)
		if q.deadline != 0 {
			r.deadline = now.Add(q.deadline)
			r.due = r.deadline
		}
		return r
	}
	rate := 1000.0 // cost units per second: 1 ms per token
	predict := func(c float64) time.Duration { return time.Duration(c / rate * float64(time.Second)) }
	tests := []struct {
		name      string
		reqs      []rq
		shortOnly bool
		draining  bool
		want      []int // ids of the batch, in order; nil = no batch
		wantWake  time.Duration
	}{
		{name: "waits for the queue delay", reqs: []rq{{1, tgt, 10, 0, 1 * time.Millisecond, 0}},
			want: nil, wantWake: 9 * time.Millisecond},
		{name: "draining closes at once", reqs: []rq{{1, tgt, 10, 0, 0, 0}}, draining: true, want: []int{1}},
		{name: "full budget closes at once", reqs: []rq{{1, tgt, 60, 0, 0, 0}, {2, tgt, 50, 0, 0, 0}}, want: []int{1}},
		{name: "nearest length classes fill", reqs: []rq{
			{1, tgt, 16, 0, 20 * time.Millisecond, 0}, {2, tgt, 70, 0, 0, 0}, {3, tgt, 20, 0, 0, 0},
			{4, tgt, 17, 0, 0, 0}, {5, tgt, 40, 0, 0, 0}, {6, other, 16, 0, 0, 0}},
			want: []int{1, 3, 4, 5}}, // 70 (class 7) would fit before 40 (class 6) in rank order
		{name: "priority anchors", reqs: []rq{
			{1, tgt, 16, 0, 20 * time.Millisecond, 0}, {2, other, 16, 3, 0, 0}}, want: []int{2}},
		{name: "deadline limits the batch", reqs: []rq{
			{1, tgt, 10, 0, 20 * time.Millisecond, 30 * time.Millisecond}, {2, tgt, 60, 0, 0, 0}, {3, tgt, 15, 0, 0, 0}},
			want: []int{1, 3}},
		{name: "short only skips long requests", shortOnly: true, reqs: []rq{
			{1, tgt, 150, 0, 20 * time.Millisecond, 0}, {2, tgt, 30, 0, 10 * time.Millisecond, 0}, {3, tgt, 80, 0, 0, 0}},
			want: []int{2}},
		{name: "short only, nothing short", shortOnly: true, reqs: []rq{{1, tgt, 150, 0, 20 * time.Millisecond, 0}}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewLengthAware()
			for _, q := range tc.reqs {
				s.Push(mk(q))
			}
			st := SchedState{Now: now, MaxBatchTokens: 100, MaxQueueDelay: 10 * time.Millisecond,
				Draining: tc.draining, ShortOnly: tc.shortOnly, Predict: predict}
			got, wake := s.Next(&st)
			var ids []int
			for _, r := range got {
				ids = append(ids, int(r.seq))
			}
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("batch %v, want %v", ids, tc.want)
			}
			if tc.want == nil && tc.wantWake != 0 && wake.Sub(now) != tc.wantWake {
				t.Fatalf("wake in %v, want %v", wake.Sub(now), tc.wantWake)
			}
			if s.Len() != len(tc.reqs)-len(got) {
				t.Fatalf("%d left queued", s.Len())
			}
		})
	}
}

// NewLeastSlack: latest start first, and a batch grows only while every
// member meets its goal; NewLengthAware on the same queue: FIFO and full.
func TestLeastSlackNext(t *testing.T) {
	now := time.Now()
	tgt := &Target{merge: &mergeEncoder{}, tokenCost: 1, longCost: 100}
	predict := func(c float64) time.Duration { return time.Duration(c) * time.Millisecond } // 1 ms per token
	mk := func(id, tokens int, age, slack time.Duration) *Request {
		r := &Request{t: tgt, tokens: tokens, maxLen: tokens, cost: float64(tokens), seq: uint64(id), submitted: now.Add(-age)}
		r.due = r.submitted.Add(slack)
		return r
	}
	run := func(s Scheduler, reqs ...*Request) [][]int {
		for _, r := range reqs {
			s.Push(r)
		}
		var out [][]int
		for s.Len() > 0 {
			st := SchedState{Now: now, MaxBatchTokens: 200, MaxQueueDelay: time.Millisecond, Draining: true, Predict: predict}
			got, _ := s.Next(&st)
			var ids []int
			for _, r := range got {
				ids = append(ids, int(r.seq))
			}
			out = append(out, ids)
		}
		return out
	}
	// 1: short, waited 15 ms, due in 85 ms; 2: 80 tokens, new, due in 100 ms
	// (latest start in 20 ms, 1's in 75 ms). Together they finish in 90 ms:
	// late for 1, which alone makes it.
	reqs := func() []*Request {
		return []*Request{mk(1, 10, 15*time.Millisecond, 100*time.Millisecond), mk(2, 80, 0, 100*time.Millisecond)}
	}
	if got := run(NewLeastSlack(), reqs()...); !reflect.DeepEqual(got, [][]int{{2}, {1}}) {
		t.Errorf("least slack: batches %v, want [[2] [1]]", got)
	}
	if got := run(NewLengthAware(), reqs()...); !reflect.DeepEqual(got, [][]int{{1, 2}}) {
		t.Errorf("length-aware: batches %v, want [[1 2]]", got)
	}
	// With room for both goals, they merge, the longer first.
	loose := []*Request{mk(1, 10, 15*time.Millisecond, 200*time.Millisecond), mk(2, 80, 0, 200*time.Millisecond)}
	if got := run(NewLeastSlack(), loose...); !reflect.DeepEqual(got, [][]int{{2, 1}}) {
		t.Errorf("least slack, loose goals: batches %v, want [[2 1]]", got)
	}
}

// The metrics: counters add up, padding is 0, the Prometheus text parses.
func TestSchedulerMetrics(t *testing.T) {
	var st Stats
	a := NewAsync(AsyncOptions{MaxBatchTokens: 64, Stats: &st})
	enc := &mergeEncoder{perToken: 100 * time.Microsecond}
	tg := a.Target(enc)
	var reqs []*Request
	for i := range 40 {
		r, err := tg.Submit(seqBatch(int32(i), 1+i%7), &Outputs{Pooled: make([]float32, 1)}, SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		if err := r.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s := a.Stats()
	a.Close()
	if s.Submitted != 40 || s.Completed != 40 || s.CompletedByStatus[status.OK] != 40 || s.QueueCapacity != DefaultQueueCapacity {
		t.Fatalf("counts %+v", s)
	}
	if s.SchedRequests != 40 || s.SchedBatches == 0 || s.SchedBatches >= 40 || s.MeanBatchFill <= 0 || s.MeanBatchFill > 1 {
		t.Fatalf("batches %d for %d requests, fill %v", s.SchedBatches, s.SchedRequests, s.MeanBatchFill)
	}
	if s.PaddedTokens != 0 || s.PaddingRatio != 0 || s.Tokens == 0 || s.TokensPerSecond <= 0 {
		t.Fatalf("tokens %d padded %d ratio %v rate %v", s.Tokens, s.PaddedTokens, s.PaddingRatio, s.TokensPerSecond)
	}
	if s.QueueLatencyCount != 40 || s.LatencyCount != 40 || s.LatencyP50 <= 0 || s.LatencyP99 < s.LatencyP50 || s.QueueLatencyP99 < s.QueueLatencyP50 {
		t.Fatalf("latencies %+v", s)
	}
	if s.DeviceBusy <= 0 || s.DeviceBusyShare <= 0 || s.DeviceBusyShare > 1 || s.Uptime < s.DeviceBusy {
		t.Fatalf("busy %v share %v uptime %v", s.DeviceBusy, s.DeviceBusyShare, s.Uptime)
	}
	text := string(s.AppendPrometheus(nil, Gauge{"raptor_live_models", "Models loaded.", 1}))
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "raptor_") || strings.Contains(value, " ") {
			t.Fatalf("bad line %q", line)
		}
		if _, err := strconv.ParseFloat(value, 64); err != nil {
			t.Fatalf("bad value in %q", line)
		}
		seen[name] = true
	}
	for _, want := range []string{
		`raptor_requests_completed_total{status="OK"}`, `raptor_submits_rejected_total{status="BUSY"}`,
		`raptor_queue_latency_seconds{quantile="0.99"}`, "raptor_queue_latency_seconds_count",
		"raptor_padding_ratio", "raptor_tokens_per_second", "raptor_device_busy_share", "raptor_batch_fill_ratio",
		"raptor_live_models",
	} {
		if !seen[want] {
			t.Fatalf("%s missing from:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "raptor_padding_ratio 0\n") || !strings.Contains(text, `raptor_requests_completed_total{status="OK"} 40`) {
		t.Fatalf("unexpected values:\n%s", text)
	}
}

func TestLatencyHistogram(t *testing.T) {
	var h latencyHist
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram")
	}
	for us := 1; us <= 10000; us++ {
		h.record(time.Duration(us) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.99} {
		got := h.quantile(q).Seconds() * 1e6
		want := q * 10000
		if got < want*0.96 || got > want*1.04 {
			t.Fatalf("q%v = %v us, want about %v", q, got, want)
		}
	}
	for i := 0; i < histBuckets; i++ { // buckets are increasing
		if i > 0 && histMid(i) <= histMid(i-1) {
			t.Fatalf("bucket %d", i)
		}
	}
	h.record(1000 * time.Hour) // clamps
}
