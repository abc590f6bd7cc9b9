package engine

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// Encoder runs one packed batch synchronously. *Model implements it.
type Encoder interface {
	Encode(ctx context.Context, b *Batch, out *Outputs) error
}

// validator is implemented by encoders that can check a request up front
// (*Model does), so Submit rejects it synchronously.
type validator interface {
	validate(b *Batch, out *Outputs) error
}

// DefaultQueueCapacity is the queue capacity used when AsyncOptions leaves it 0.
const DefaultQueueCapacity = 1024

// AsyncOptions configure an Async.
type AsyncOptions struct {
	// QueueCapacity is how many requests may wait (queued, not yet
	// running) before Submit answers status.Busy; 0 = DefaultQueueCapacity.
	QueueCapacity int
	// Workers is how many requests run at once; 0 = runtime.GOMAXPROCS(0).
	Workers int
	// Stats receives the counters; nil = a private Stats.
	Stats *Stats
	// Scheduler orders the queue; nil = NewFIFO().
	Scheduler Scheduler
	// Log reports faults (a panicking encoder or callback); nil = silent.
	Log LogFunc
}

// Async runs requests asynchronously: a bounded queue ordered by a
// Scheduler, drained by a pool of worker goroutines that call an Encoder.
// Every accepted request completes exactly once: successfully, with the
// encoder's error, with status.Cancelled, or with status.Shutdown when its
// Target or the Async is closed first.
type Async struct {
	mu       sync.Mutex
	work     sync.Cond // signalled when the queue gains a request or Async closes
	sched    Scheduler
	capacity int
	closed   bool
	targets  map[*Target]struct{}

	stats   *Stats
	log     LogFunc
	workers sync.WaitGroup
}

// NewAsync starts an Async and its workers. Close stops them.
func NewAsync(opts AsyncOptions) *Async {
	a := &Async{
		sched:    opts.Scheduler,
		capacity: opts.QueueCapacity,
		targets:  map[*Target]struct{}{},
		stats:    opts.Stats,
		log:      opts.Log,
	}
	a.work.L = &a.mu
	if a.sched == nil {
		a.sched = NewFIFO()
	}
	if a.capacity <= 0 {
		a.capacity = DefaultQueueCapacity
	}
	if a.stats == nil {
		a.stats = new(Stats)
	}
	n := opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	a.workers.Add(n)
	for range n {
		go a.worker()
	}
	return a
}

// Stats returns the counters and the current queue depth.
func (a *Async) Stats() StatsSnapshot {
	s := a.stats.Snapshot()
	a.mu.Lock()
	s.QueueDepth = int64(a.sched.Len())
	a.mu.Unlock()
	return s
}

// Close rejects new requests with status.Shutdown, completes every pending
// request (queued ones with status.Shutdown; running ones are cancelled with
// status.Shutdown and complete when their encoder returns), waits for their
// callbacks to return and stops the workers. It must not be called from a
// completion callback. Close is idempotent.
func (a *Async) Close() {
	a.mu.Lock()
	a.closed = true
	targets := make([]*Target, 0, len(a.targets))
	for t := range a.targets {
		targets = append(targets, t)
	}
	a.work.Broadcast()
	a.mu.Unlock()
	for _, t := range targets {
		t.Close()
	}
	a.workers.Wait()
}

// Target returns the submission point for enc. Each model gets its own, so
// that freeing the model can complete its requests without touching others.
func (a *Async) Target(enc Encoder) *Target {
	t := &Target{a: a, enc: enc, live: map[*Request]struct{}{}}
	a.mu.Lock()
	if a.closed {
		t.closed = true
	} else {
		a.targets[t] = struct{}{}
	}
	a.mu.Unlock()
	return t
}

// Target submits requests to one Encoder through an Async.
type Target struct {
	a       *Async
	enc     Encoder
	closed  bool                  // guarded by a.mu
	live    map[*Request]struct{} // queued or running; guarded by a.mu
	pending sync.WaitGroup        // accepted requests whose completion has not returned
}

// SubmitOptions are the optional hooks of one request.
type SubmitOptions struct {
	// Done, if set, is called exactly once when the request completes, on a
	// goroutine of the Async (never inside Submit or Cancel). Poll, Wait and
	// Err already report the result when it runs.
	Done func(r *Request)
	// Deliver, if set, runs on the worker after a successful Encode and
	// before the request completes (to convert or copy outputs into their
	// final place). Its error fails the request. It does not run for a
	// request that was cancelled.
	Deliver func() error
}

type reqState uint8

const (
	stateQueued  reqState = iota
	stateRunning          // a worker (or a canceller) owns it; it completes soon
	stateDone
)

// Request is one asynchronous encode.
type Request struct {
	t      *Target
	batch  Batch
	out    Outputs
	opts   SubmitOptions
	ctx    context.Context
	cancel context.CancelCauseFunc

	schedElem any      // the Scheduler's bookkeeping
	state     reqState // guarded by t.a.mu
	cause     error    // guarded by t.a.mu: why it was cancelled, nil if it was not

	err  error         // the result; written before done is closed
	done chan struct{} // closed on completion
}

// Submit queues a request. The batch is copied before Submit returns; out's
// slices are written by the worker and must stay valid and untouched until
// the request completes. Errors: status.InvalidArgument (nil batch or
// outputs), status.Busy (queue full; nothing was queued), status.Shutdown
// (the Target or the Async is closed), and the encoder's own validation
// errors (status.InvalidArgument, status.OutOfRange, status.BufferTooSmall)
// when it can validate up front, as *Model does.
func (t *Target) Submit(b *Batch, out *Outputs, opts SubmitOptions) (*Request, error) {
	if b == nil || out == nil {
		return nil, status.Errorf(status.InvalidArgument, "nil batch or outputs")
	}
	if v, ok := t.enc.(validator); ok {
		if err := v.validate(b, out); err != nil {
			return nil, err // a bad request fails now, not at completion
		}
	}
	a := t.a
	a.mu.Lock()
	switch {
	case a.closed || t.closed:
		a.mu.Unlock()
		return nil, status.Errorf(status.Shutdown, "the engine or model is shutting down")
	case a.sched.Len() >= a.capacity:
		a.mu.Unlock()
		return nil, status.Errorf(status.Busy, "the request queue is full (%d requests waiting); retry later", a.capacity)
	}
	r := &Request{
		t: t,
		batch: Batch{
			Tokens:     slices.Clone(b.Tokens),
			CuSeqlens:  slices.Clone(b.CuSeqlens),
			TokenTypes: slices.Clone(b.TokenTypes),
			Seeds:      slices.Clone(b.Seeds),
		},
		out:  *out,
		opts: opts,
		done: make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	t.live[r] = struct{}{}
	t.pending.Add(1)
	a.sched.Push(r)
	a.stats.RecordSubmit()
	a.work.Signal()
	a.mu.Unlock()
	return r, nil
}

// Close rejects new requests with status.Shutdown, completes this target's
// pending requests with status.Shutdown (running ones when their encoder
// returns) and waits until their callbacks have returned. It must not be
// called from a completion callback of this target. Close is idempotent.
func (t *Target) Close() {
	a := t.a
	a.mu.Lock()
	t.closed = true
	delete(a.targets, t)
	reqs := make([]*Request, 0, len(t.live))
	for r := range t.live {
		reqs = append(reqs, r)
	}
	a.mu.Unlock()
	for _, r := range reqs {
		r.cancelWith(status.Errorf(status.Shutdown, "the engine or model was shut down before the request completed"))
	}
	t.pending.Wait()
}

func (a *Async) worker() {
	defer a.workers.Done()
	for {
		a.mu.Lock()
		for a.sched.Len() == 0 && !a.closed {
			a.work.Wait()
		}
		r := a.sched.Pop()
		if r == nil { // closed and drained
			a.mu.Unlock()
			return
		}
		r.state = stateRunning
		a.mu.Unlock()
		a.run(r)
	}
}

func (a *Async) run(r *Request) {
	err := a.protect("encoder", func() error { return r.t.enc.Encode(r.ctx, &r.batch, &r.out) })
	a.stats.RecordBatch(len(r.batch.Tokens), err)
	if err == nil && r.opts.Deliver != nil {
		a.mu.Lock()
		cancelled := r.cause != nil
		a.mu.Unlock()
		if !cancelled {
			err = a.protect("output delivery", r.opts.Deliver)
		}
	}
	a.finish(r, err)
}

// finish completes r with err, or with its cancel cause if it was cancelled:
// a request cancelled before it completes always reports the cancel.
func (a *Async) finish(r *Request, err error) {
	a.mu.Lock()
	if r.cause != nil {
		err = r.cause
	}
	r.state = stateDone
	delete(r.t.live, r)
	a.mu.Unlock()

	r.cancel(nil) // releases the context
	r.batch, r.out = Batch{}, Outputs{}
	r.err = err
	a.stats.RecordResult(err)
	close(r.done)
	if r.opts.Done != nil {
		_ = a.protect("completion callback", func() error { r.opts.Done(r); return nil })
	}
	r.t.pending.Done()
}

// protect runs f, turning a panic into a status.Internal error.
func (a *Async) protect(what string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(status.Internal, "%s panicked: %v", what, p)
			if a.log != nil {
				a.log(LogError, err.Error())
			}
		}
	}()
	return f()
}

// Cancel asks to cancel the request. A queued request completes with
// status.Cancelled at once (its callback runs on another goroutine); a
// running one is interrupted and completes with status.Cancelled when its
// encoder returns. Cancelling a completed request does nothing.
func (r *Request) Cancel() {
	r.cancelWith(status.Errorf(status.Cancelled, "request cancelled"))
}

func (r *Request) cancelWith(cause error) {
	a := r.t.a
	a.mu.Lock()
	switch r.state {
	case stateDone:
		a.mu.Unlock()
		return
	case stateRunning:
		if r.cause == nil {
			r.cause = cause
		}
		a.mu.Unlock()
		r.cancel(cause)
		return
	}
	// Queued: take it out of the queue and complete it here.
	a.sched.Remove(r)
	r.state = stateRunning
	r.cause = cause
	a.mu.Unlock()
	if r.opts.Done != nil {
		go a.finish(r, cause) // the callback never runs inside the caller's Cancel
	} else {
		a.finish(r, cause)
	}
}

// Done returns a channel closed when the request completes.
func (r *Request) Done() <-chan struct{} { return r.done }

// Err returns the request's result once it completed (nil for success), and
// nil while it is pending.
func (r *Request) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Poll reports whether the request completed and, if so, its result. It
// never blocks.
func (r *Request) Poll() (done bool, err error) {
	select {
	case <-r.done:
		return true, r.err
	default:
		return false, nil
	}
}

// Wait waits up to timeout (negative = no limit) for the request to
// complete and returns its result, or a status.Timeout error if it did not
// complete in time. A request itself never completes with status.Timeout.
func (r *Request) Wait(timeout time.Duration) error {
	if timeout < 0 {
		<-r.done
		return r.err
	}
	select {
	case <-r.done:
		return r.err
	default:
	}
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		select {
		case <-r.done:
			return r.err
		case <-tm.C:
		}
	}
	return status.Errorf(status.Timeout, "request did not complete within %v", timeout)
}
