package engine

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raptor-infer/raptor/internal/gpu"
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

// Defaults of AsyncOptions.
const (
	DefaultQueueCapacity = 1024
	DefaultLanes         = 2
	DefaultSlack         = time.Second
)

// AsyncOptions configure an Async.
type AsyncOptions struct {
	// QueueCapacity is how many requests may wait (queued, not yet in a
	// batch) before Submit answers status.Busy; 0 = DefaultQueueCapacity.
	QueueCapacity int
	// MaxBatchTokens is the token budget of a batch: the scheduler merges
	// requests of one model up to it (a larger request runs alone);
	// 0 = DefaultOptions().MaxBatchTokens.
	MaxBatchTokens int
	// MaxQueueDelay is how long a request may wait for its batch to fill;
	// 0 = a batch closes as soon as a lane is free.
	MaxQueueDelay time.Duration
	// Lanes is how many batches compute at once; 0 = DefaultLanes. With
	// two or more, one lane is kept for short batches while the others run
	// long ones (see NewLengthAware), except on a device that runs every
	// lane on one stream (the CUDA backend).
	Lanes int
	// Deliverers is how many goroutines scatter results, write outputs and
	// run completion callbacks; 0 = max(2, GOMAXPROCS).
	Deliverers int
	// DefaultSlack is how far after its submit a request without a
	// deadline is due, for ordering only; 0 = DefaultSlack.
	DefaultSlack time.Duration
	// Stats receives the counters; nil = a private Stats.
	Stats *Stats
	// Scheduler forms the batches; nil = NewLengthAware().
	Scheduler Scheduler
	// Log reports faults (a panicking encoder or callback); nil = silent.
	Log LogFunc
	// Devices is how many devices the encoders run on (Engine.NumDevices);
	// 0 = 1. Each device gets Lanes lanes of its own, and each batch goes to
	// the healthy device with the least outstanding cost; an encoder that
	// implements Encode runs a batch on its lane's device (a *Model of an
	// engine with several devices does).
	Devices int
	// DeviceErr reports device i's sticky failure (Engine.DeviceErr); nil =
	// devices fail only when an encode answers status.DeviceFailed. A
	// failed device takes no more batches: the requests of a batch formed
	// for it that had not started go back to the queue for the others, those
	// computing on it fail with status.DeviceFailed, and once every device
	// failed every pending and new request gets status.DeviceFailed.
	DeviceErr func(i int) error
	// Trace, if set, receives each batch's timings once its last member
	// has completed (diagnostics: it runs on a deliverer, so it must be
	// quick; nil = no tracing, no cost).
	Trace func(BatchTrace)
}

// BatchTrace is one batch's path through the pipeline (AsyncOptions.Trace).
type BatchTrace struct {
	Lane, Device int
	Requests     int // members when it was formed
	Tokens       int
	BusyLanes    int       // lanes of its device busy when it was formed, itself included
	FirstSubmit  time.Time // its members' earliest submit
	LastSubmit   time.Time // and latest
	Formed       time.Time // the scheduler closed it
	Packed       time.Time // its inputs were concatenated
	Start, End   time.Time // the encoder ran
	Delivered    time.Time // its last member completed (callback returned)
	// GPU is the CUDA backend's breakdown of the encode (zero on the CPU).
	GPU gpu.ForwardTrace
}

// Async serves requests asynchronously, in a pipeline of goroutines:
//
//	Submit -> bounded queue -> former -> lanes -> dispatcher -> deliverers
//
// The former asks the Scheduler for the next batch whenever a compute lane
// is free, and packs it (concatenates the requests' tokens, cu_seqlens,
// token types and seeds) off the lanes. Each lane runs one batch at a time
// through the Encoder; with two lanes, batch k+1 is packed and starts while
// batch k computes. Finished batches go to the dispatcher, whose
// deliverers scatter each request's hidden states, pool them, write the
// outputs (SubmitOptions.Deliver) and run the callbacks, while the lanes
// compute the next batches.
//
// Every accepted request completes exactly once: successfully, with the
// encoder's error, with status.Cancelled, status.DeadlineExceeded, or
// status.Shutdown when its Target or the Async is closed first. A request
// can be cancelled (or expire) at any point before its delivery starts; it
// then completes at once, and its batch stops early if no member is left.
type Async struct {
	mu       sync.Mutex
	sched    Scheduler
	capacity int
	budget   int
	delay    time.Duration
	slack    time.Duration
	closed   bool // Submit answers Shutdown
	draining bool // closed; queued requests still run, batches close at once
	stop     bool // the former exits
	targets  map[*Target]struct{}
	seq      uint64
	live     int           // accepted requests not completed yet
	drained  chan struct{} // closed when live reaches 0 after a drain started
	space    chan struct{} // closed when queue space frees, for blocked submits
	waiters  int           // submits blocked on space
	shutdown chan struct{} // closed when Shutdown has finished

	laneBusy []bool
	laneDev  []int // the device of each lane
	lanesPer int   // lanes per device
	devs     []devState
	devErr   func(i int) error
	rate     float64 // measured cost units per second of one device (0 = unknown)

	poke     chan struct{}  // wakes the former
	lanes    []chan *batch  // one per lane, from the former
	finished chan *batch    // lanes -> dispatcher
	deliver  chan delivery  // dispatcher -> deliverers
	wg       sync.WaitGroup // every goroutine of the pipeline

	stats *Stats
	log   LogFunc
	trace func(BatchTrace)

	beforeCompute func(b *batch) // a test seam: runs on the lane before a batch's device check
}

// NewAsync starts an Async and its goroutines. Close or Shutdown stops
// them.
func NewAsync(opts AsyncOptions) *Async {
	a := &Async{
		sched:    opts.Scheduler,
		capacity: opts.QueueCapacity,
		budget:   opts.MaxBatchTokens,
		delay:    max(opts.MaxQueueDelay, 0),
		slack:    opts.DefaultSlack,
		targets:  map[*Target]struct{}{},
		stats:    opts.Stats,
		log:      opts.Log,
		trace:    opts.Trace,
		poke:     make(chan struct{}, 1),
	}
	if a.sched == nil {
		a.sched = NewLengthAware()
	}
	if a.capacity <= 0 {
		a.capacity = DefaultQueueCapacity
	}
	if a.budget <= 0 {
		a.budget = DefaultOptions().MaxBatchTokens
	}
	if a.slack <= 0 {
		a.slack = DefaultSlack
	}
	if a.stats == nil {
		a.stats = new(Stats)
	}
	a.stats.budget.Store(int64(a.budget))
	a.stats.mu.Lock()
	a.stats.startLocked(time.Now()) // the uptime clock
	a.stats.mu.Unlock()
	lanesPer := opts.Lanes
	if lanesPer <= 0 {
		lanesPer = DefaultLanes
	}
	ndev := max(opts.Devices, 1)
	lanes := lanesPer * ndev
	a.lanesPer, a.devErr = lanesPer, opts.DeviceErr
	a.devs = make([]devState, ndev)
	for i := range lanes {
		a.laneDev = append(a.laneDev, i/lanesPer)
	}
	deliverers := opts.Deliverers
	if deliverers <= 0 {
		deliverers = max(2, runtime.GOMAXPROCS(0))
	}
	a.laneBusy = make([]bool, lanes)
	a.finished = make(chan *batch, lanes)
	a.deliver = make(chan delivery)
	var lanesWG sync.WaitGroup
	for i := range lanes {
		ch := make(chan *batch)
		a.lanes = append(a.lanes, ch)
		lanesWG.Add(1)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer lanesWG.Done()
			a.lane(i, ch)
		}()
	}
	a.wg.Add(3 + deliverers)
	go func() {
		defer a.wg.Done()
		a.former()
		for _, ch := range a.lanes {
			close(ch)
		}
	}()
	go func() {
		defer a.wg.Done()
		lanesWG.Wait()
		close(a.finished)
	}()
	go func() {
		defer a.wg.Done()
		a.dispatch()
	}()
	for range deliverers {
		go func() {
			defer a.wg.Done()
			for d := range a.deliver {
				for i := d.lo; i < d.hi; i++ {
					a.deliverOne(d.b, i)
				}
			}
		}()
	}
	return a
}

// Stats returns the counters, the current queue depth and the capacity.
func (a *Async) Stats() StatsSnapshot {
	s := a.stats.Snapshot()
	a.mu.Lock()
	s.QueueDepth = int64(a.sched.Len())
	s.QueueCapacity = int64(a.capacity)
	a.mu.Unlock()
	return s
}

// DeviceStats returns the pipeline's counters of each device.
func (a *Async) DeviceStats() []AsyncDeviceStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AsyncDeviceStats, len(a.devs))
	for i := range a.devs {
		d := &a.devs[i]
		out[i] = AsyncDeviceStats{Index: i, Failed: d.failed != nil, Batches: d.batches, Tokens: d.tokens,
			Requests: d.requests, Requeued: d.requeued, FailedInFlight: d.lost, Outstanding: d.load, BusyLanes: d.busy}
	}
	return out
}

// Close completes every pending request with status.Shutdown and stops the
// Async: Shutdown(false, 0).
func (a *Async) Close() { _ = a.Shutdown(false, 0) }

// Shutdown rejects new requests with status.Shutdown, then either drains
// (drain: queued and running requests complete normally, batches closing at
// once) for up to timeout (negative = no limit), or does not wait (drain
// false). Requests still pending then complete with status.Shutdown
// (those being delivered complete normally). Shutdown returns when every
// request has completed and its callback has returned, and the pipeline's
// goroutines have stopped. It returns a status.Timeout error if the drain
// did not finish in time, and nil otherwise. It must not be called from a
// completion callback. Later calls wait for the first one and return nil.
func (a *Async) Shutdown(drain bool, timeout time.Duration) error {
	a.mu.Lock()
	if a.shutdown != nil {
		ch := a.shutdown
		a.mu.Unlock()
		<-ch
		return nil
	}
	a.shutdown = make(chan struct{})
	a.closed, a.draining = true, drain
	a.drained = make(chan struct{})
	if a.live == 0 {
		close(a.drained)
	}
	a.freeSpace(true)
	drained := a.drained
	a.mu.Unlock()
	a.wake()

	var err error
	if drain {
		var expired <-chan time.Time
		if timeout >= 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-drained:
		case <-expired:
			a.mu.Lock()
			n := a.live
			a.mu.Unlock()
			err = status.Errorf(status.Timeout, "shutdown: %d requests had not completed after draining for %v; they complete with SHUTDOWN", n, timeout)
		}
	}
	a.mu.Lock()
	targets := make([]*Target, 0, len(a.targets))
	for t := range a.targets {
		targets = append(targets, t)
	}
	a.mu.Unlock()
	for _, t := range targets {
		t.Close()
	}
	a.mu.Lock()
	a.stop = true
	a.mu.Unlock()
	a.wake()
	a.wg.Wait()
	close(a.shutdown)
	return err
}

// Target returns the submission point for enc. Each model gets its own, so
// that freeing the model can complete its requests without touching others.
func (a *Async) Target(enc Encoder) *Target {
	t := &Target{a: a, enc: enc, live: map[*Request]struct{}{}}
	t.cost = func(n int) float64 { return float64(n) }
	if c, ok := enc.(coster); ok {
		t.cost = c.seqCost
	}
	if m, ok := enc.(merger); ok {
		t.merge = m
	}
	if o, ok := enc.(oneStreamer); ok {
		t.oneStream = o.oneStream()
	}
	t.tokenCost = t.cost(1)
	t.longCost = float64(a.budget) * t.tokenCost / 4
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
	a         *Async
	enc       Encoder
	merge     merger              // nil: each request is a batch of its own
	cost      func(n int) float64 // the cost model
	tokenCost float64             // cost(1)
	longCost  float64             // a batch costing more is long: a quarter of a full batch
	oneStream bool                // its device runs batches in order on one stream (the GPU): no short lane
	closed    bool                // guarded by a.mu
	live      map[*Request]struct{}
	pending   sync.WaitGroup // accepted requests whose completion has not returned
}

// SubmitOptions are the optional settings of one request.
type SubmitOptions struct {
	// Done, if set, is called exactly once when the request completes, on a
	// goroutine of the Async (never inside Submit or Cancel). Poll, Wait and
	// Err already report the result when it runs. It must not wait for
	// other requests: that can deadlock once every deliverer is in a
	// callback.
	Done func(r *Request)
	// Deliver, if set, runs on a deliverer after a successful Encode and
	// before the request completes (to convert or copy outputs into their
	// final place). Its error fails the request. It does not run for a
	// request that was cancelled.
	Deliver func() error
	// Priority ranks the request: higher runs first. Default 0.
	Priority int32
	// Deadline, if not zero, is when the request must have completed: if
	// it has not started being delivered by then, it completes with
	// status.DeadlineExceeded at once. A deadline already past fails
	// Submit with status.DeadlineExceeded.
	Deadline time.Time
	// BlockTimeout is how long Submit waits for queue space when the queue
	// is full: 0 = answer status.Busy at once, negative = no limit. It must
	// be 0 inside a completion callback (a blocked callback can stop the
	// queue from draining).
	BlockTimeout time.Duration
}

type reqState uint8

const (
	stateQueued     reqState = iota
	stateBatched             // in a batch: packing, waiting for its lane, computing, or waiting for delivery
	stateDelivering          // a deliverer owns it; it completes soon, cancel no longer applies
	stateFinishing           // a canceller owns it; it completes soon
	stateDone
)

// Request is one asynchronous encode.
type Request struct {
	t     *Target
	batch Batch
	out   Outputs
	opts  SubmitOptions

	// Scheduling facts, fixed at Submit.
	seq       uint64
	prio      int32
	submitted time.Time
	deadline  time.Time
	due       time.Time
	tokens    int
	maxLen    int
	cost      float64
	solo      bool // runs as a batch of its own (device outputs, or no merger)

	schedElem any         // the Scheduler's bookkeeping
	state     reqState    // guarded by t.a.mu
	inBatch   *batch      // guarded by t.a.mu: its batch while stateBatched
	timer     *time.Timer // the deadline

	err  error         // the result; written before done is closed
	done chan struct{} // closed on completion
}

// Submit queues a request. The batch is copied before Submit returns; out's
// slices are written by a deliverer and must stay valid and untouched until
// the request completes. Errors (nothing was queued): status.InvalidArgument
// (nil batch or outputs), status.Busy (queue full, after BlockTimeout),
// status.Shutdown (the Target or the Async is closed),
// status.DeadlineExceeded (the deadline has passed), and the encoder's own
// validation errors (status.InvalidArgument, status.OutOfRange for a too
// long sequence, status.BufferTooSmall) when it can validate up front, as
// *Model does.
func (t *Target) Submit(b *Batch, out *Outputs, opts SubmitOptions) (*Request, error) {
	r, err := t.submit(b, out, opts)
	if err != nil {
		t.a.stats.RecordReject(err)
	}
	return r, err
}

func (t *Target) submit(b *Batch, out *Outputs, opts SubmitOptions) (*Request, error) {
	if b == nil || out == nil {
		return nil, status.Errorf(status.InvalidArgument, "nil batch or outputs")
	}
	if v, ok := t.enc.(validator); ok {
		if err := v.validate(b, out); err != nil {
			return nil, err // a bad request fails now, not at completion
		}
	}
	start := time.Now()
	if !opts.Deadline.IsZero() && !opts.Deadline.After(start) {
		return nil, status.Errorf(status.DeadlineExceeded, "the request's deadline passed %v before it was submitted", start.Sub(opts.Deadline))
	}
	r := &Request{
		t: t,
		batch: Batch{
			Tokens:     slices.Clone(b.Tokens),
			CuSeqlens:  slices.Clone(b.CuSeqlens),
			TokenTypes: slices.Clone(b.TokenTypes),
			Seeds:      slices.Clone(b.Seeds),
		},
		out:      *out,
		opts:     opts,
		prio:     opts.Priority,
		deadline: opts.Deadline,
		tokens:   len(b.Tokens),
		solo:     t.merge == nil || out.HiddenDevice != 0 || out.PooledDevice != 0,
		done:     make(chan struct{}),
	}
	for s := 0; s < r.batch.NumSeqs(); s++ {
		n := int(r.batch.CuSeqlens[s+1] - r.batch.CuSeqlens[s])
		r.maxLen = max(r.maxLen, n)
		r.cost += t.cost(n)
	}
	if r.batch.NumSeqs() == 0 {
		r.cost = t.cost(r.tokens)
	}

	a := t.a
	var until time.Time
	if opts.BlockTimeout > 0 {
		until = start.Add(opts.BlockTimeout)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	a.mu.Lock()
	for {
		if a.closed || t.closed {
			a.mu.Unlock()
			return nil, status.Errorf(status.Shutdown, "the engine or model is shutting down")
		}
		if a.devErr != nil || len(a.devs) > 1 {
			if dev, _, _, _ := a.pickDevice(); dev == -2 {
				a.mu.Unlock()
				return nil, a.allFailedErr()
			}
		}
		if a.sched.Len() < a.capacity {
			break
		}
		wait := time.Until(until)
		if opts.BlockTimeout == 0 || (opts.BlockTimeout > 0 && wait <= 0) {
			a.mu.Unlock()
			if opts.BlockTimeout > 0 {
				return nil, status.Errorf(status.Busy, "the request queue stayed full (%d requests waiting) for %v; retry later", a.capacity, opts.BlockTimeout)
			}
			return nil, status.Errorf(status.Busy, "the request queue is full (%d requests waiting); retry later", a.capacity)
		}
		if !r.deadline.IsZero() {
			left := time.Until(r.deadline)
			if left <= 0 {
				a.mu.Unlock()
				return nil, status.Errorf(status.DeadlineExceeded, "the request's deadline passed while it waited for room in the full queue (%d requests)", a.capacity)
			}
			if opts.BlockTimeout < 0 || left < wait {
				wait = left // wake at the deadline
			}
		}
		if a.space == nil {
			a.space = make(chan struct{})
		}
		space := a.space
		a.waiters++
		a.mu.Unlock()
		var expired <-chan time.Time
		if opts.BlockTimeout > 0 || !r.deadline.IsZero() {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		select {
		case <-space:
		case <-expired:
		}
		a.mu.Lock()
		a.waiters--
	}
	now := time.Now()
	a.seq++
	r.seq, r.submitted = a.seq, now
	r.due = now.Add(a.slack)
	if !r.deadline.IsZero() {
		r.due = r.deadline
		d := r.deadline.Sub(start).Round(time.Microsecond)
		r.timer = time.AfterFunc(r.deadline.Sub(now), func() {
			r.cancelWith(status.Errorf(status.DeadlineExceeded, "the request's deadline (%v after submit) passed before it completed", d), false)
		})
	}
	t.live[r] = struct{}{}
	t.pending.Add(1)
	a.live++
	a.sched.Push(r)
	a.stats.RecordSubmit()
	lane := slices.Contains(a.laneBusy, false)
	a.mu.Unlock()
	if lane {
		a.wake()
	}
	return r, nil
}

// freeSpace wakes the submits blocked on a full queue (a.mu held).
func (a *Async) freeSpace(force bool) {
	if a.space != nil && (a.waiters > 0 || force) {
		close(a.space)
		a.space = nil
	}
}

// wake pokes the former.
func (a *Async) wake() {
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

// Close rejects new requests with status.Shutdown, completes this target's
// pending requests with status.Shutdown (those being delivered complete
// normally) and waits until their callbacks have returned. It must not be
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
		r.cancelWith(status.Errorf(status.Shutdown, "the engine or model was shut down before the request completed"), true)
	}
	t.pending.Wait()
}

// batch is one batch of the pipeline: requests of one Target.
type batch struct {
	t       *Target
	reqs    []*Request
	ins     []Batch   // the requests' inputs (taken under a.mu)
	outs    []Outputs // the requests' outputs
	offsets []int     // token offset of each request in merged
	merged  Batch     // the packed batch, when it holds several requests
	hidden  []float32 // merged's hidden states
	// pooled: merged's pooled vectors, when every request wants pooled
	// vectors only, alike (pooledOnly); then hidden stays nil and seqOffs
	// is each request's first sequence in merged.
	pooled  []float32
	seqOffs []int
	tokens  int
	cost    float64
	lane    int
	dev     int // the lane's device
	long    bool
	conc    int // lanes busy when it was formed, itself included
	alive   int // guarded by a.mu: members still stateBatched
	ctx     context.Context
	cancel  context.CancelFunc
	err     error // the encoder's result

	tr        *BatchTrace  // AsyncOptions.Trace is set
	delivered atomic.Int32 // members handled by the deliverers (traced batches)
}

type delivery struct {
	b      *batch
	lo, hi int // requests lo..hi-1 of b
}

// deliverChunk is how many requests of a batch one deliverer takes at a
// time: one hand-off per request cost ~10 us each (a batch of 40 requests
// took 250-470 us from the encoder's end to its last completion on the
// H100 host, bench/RESULTS.md issue 8); chunks of 8 still spread a large
// batch over several deliverers.
const deliverChunk = 8

// schedState describes the pipeline to the Scheduler (a.mu held).
// free is the free lanes of the batch's device, otherFree those of every
// healthy device but the batch's lane.
func (a *Async) schedState(now time.Time, dev, free, otherFree int) SchedState {
	busy := a.lanesPer - free
	rate := a.rate
	st := SchedState{
		Now:            now,
		MaxBatchTokens: a.budget,
		MaxQueueDelay:  a.delay,
		Draining:       a.draining,
		ShortOnly:      a.lanesPer > 1 && free == 1 && a.devs[dev].long >= a.lanesPer-1,
		OtherFreeLanes: otherFree,
		Predict: func(cost float64) time.Duration {
			if rate <= 0 {
				return 0
			}
			return time.Duration(cost / rate * float64(1+busy) * 1.25 * float64(time.Second))
		},
	}
	return st
}

// former forms and packs batches while a lane is free.
func (a *Async) former() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		a.mu.Lock()
		if a.stop {
			a.mu.Unlock()
			return
		}
		var b *batch
		var wake time.Time
		var orphans []*Request
		dev, lane, free, allFree := a.pickDevice()
		switch {
		case dev == -2 && a.sched.Len() > 0:
			orphans = a.orphansLocked() // every device failed
		case lane >= 0 && a.sched.Len() > 0:
			st := a.schedState(time.Now(), dev, free, allFree-1)
			var reqs []*Request
			reqs, wake = a.sched.Next(&st)
			if len(reqs) > 0 {
				b = a.newBatch(reqs, lane, a.lanesPer-free+1)
				a.freeSpace(false)
			}
		}
		a.mu.Unlock()
		if orphans != nil {
			err := a.allFailedErr()
			for _, r := range orphans {
				r.cancelWith(err, true)
			}
			continue
		}
		if b != nil {
			a.pack(b)
			if b.tr != nil {
				b.tr.Packed = time.Now()
			}
			a.lanes[b.lane] <- b
			continue
		}
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-a.poke:
		case <-timer.C:
		}
	}
}

// newBatch takes reqs out of the queue into a batch on lane (a.mu held).
func (a *Async) newBatch(reqs []*Request, lane, conc int) *batch {
	b := &batch{t: reqs[0].t, reqs: reqs, lane: lane, conc: conc, alive: len(reqs)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for _, r := range reqs {
		r.state, r.inBatch = stateBatched, b
		b.ins = append(b.ins, r.batch)
		b.outs = append(b.outs, r.out)
		b.tokens += r.tokens
		b.cost += r.cost
	}
	b.long = b.cost > b.t.longCost
	b.dev = a.laneDev[lane]
	a.laneBusy[lane] = true
	d := &a.devs[b.dev]
	d.busy++
	d.load += b.cost
	if b.long {
		d.long++
	}
	a.stats.recordSchedBatch(len(reqs), b.tokens)
	if a.trace != nil {
		tr := &BatchTrace{Lane: lane, Device: b.dev, Requests: len(reqs), Tokens: b.tokens, BusyLanes: conc, Formed: time.Now()}
		for _, r := range reqs {
			if tr.FirstSubmit.IsZero() || r.submitted.Before(tr.FirstSubmit) {
				tr.FirstSubmit = r.submitted
			}
			if r.submitted.After(tr.LastSubmit) {
				tr.LastSubmit = r.submitted
			}
		}
		b.tr = tr
	}
	return b
}

// pack concatenates the requests of a batch of several.
func (a *Async) pack(b *batch) {
	if len(b.reqs) == 1 {
		return
	}
	m := &b.merged
	m.Tokens = make([]int32, 0, b.tokens)
	m.CuSeqlens = []int32{0}
	types, seeds := false, false
	for i := range b.ins {
		types = types || b.ins[i].TokenTypes != nil
		seeds = seeds || b.ins[i].Seeds != nil
	}
	if types {
		m.TokenTypes = make([]int32, 0, b.tokens)
	}
	for i := range b.ins {
		in := &b.ins[i]
		off := int32(len(m.Tokens))
		b.offsets = append(b.offsets, int(off))
		b.seqOffs = append(b.seqOffs, len(m.CuSeqlens)-1)
		m.Tokens = append(m.Tokens, in.Tokens...)
		for _, c := range in.CuSeqlens[1:] {
			m.CuSeqlens = append(m.CuSeqlens, off+c)
		}
		if types {
			if in.TokenTypes != nil {
				m.TokenTypes = append(m.TokenTypes, in.TokenTypes...)
			} else {
				m.TokenTypes = append(m.TokenTypes, make([]int32, len(in.Tokens))...)
			}
		}
		if seeds {
			if in.Seeds != nil {
				m.Seeds = append(m.Seeds, in.Seeds...)
			} else {
				m.Seeds = append(m.Seeds, make([]uint64, in.NumSeqs())...)
			}
		}
	}
}

// lane computes the batches of lane i.
func (a *Async) lane(i int, ch <-chan *batch) {
	for b := range ch {
		a.compute(b)
		b.cancel()
		a.mu.Lock()
		a.laneBusy[i] = false
		d := &a.devs[b.dev]
		d.busy--
		d.load -= b.cost
		if d.busy == 0 {
			d.load = 0 // no float drift while idle
		}
		if b.long {
			d.long--
		}
		a.mu.Unlock()
		a.wake()
		a.finished <- b
	}
}

// compute runs the encoder on a batch, unless none of its requests is left.
func (a *Async) compute(b *batch) {
	now := time.Now()
	a.mu.Lock()
	alive := b.alive
	for _, r := range b.reqs {
		if r.state == stateBatched {
			a.stats.queueLat.record(now.Sub(r.submitted))
		}
	}
	a.mu.Unlock()
	if alive == 0 {
		b.err = status.Errorf(status.Cancelled, "every request of the batch completed before it ran")
		return
	}
	if a.beforeCompute != nil {
		a.beforeCompute(b)
	}
	if a.requeueIfFailed(b) {
		return
	}
	ctx := b.ctx
	if len(a.devs) > 1 {
		ctx = onDevice(ctx, b.dev)
	}
	if b.tr != nil {
		ctx = gpu.WithTrace(ctx, &b.tr.GPU)
		b.tr.Start = now
		defer func() { b.tr.End = time.Now() }()
	}
	end := a.stats.BeginCompute()
	padded := 0
	err := a.protect("encoder", func() error {
		if len(b.reqs) == 1 {
			err := b.t.enc.Encode(ctx, &b.ins[0], &b.outs[0])
			padded = b.outs[0].PaddedTokens
			return err
		}
		var out *Outputs
		if o, ok := pooledOnly(b.outs); ok {
			// Pool in the encoder (on the GPU: only the pooled vectors
			// come back, not every token's hidden state).
			b.pooled = make([]float32, b.merged.NumSeqs()*b.t.merge.hiddenSize())
			out = &Outputs{Pooled: b.pooled, Pooling: o.Pooling, Normalize: o.Normalize}
		} else {
			b.hidden = make([]float32, b.tokens*b.t.merge.hiddenSize())
			out = &Outputs{Hidden: b.hidden}
		}
		err := b.t.enc.Encode(ctx, &b.merged, out)
		padded = out.PaddedTokens
		return err
	})
	end()
	dur := time.Since(now)
	a.stats.RecordBatch(b.tokens, padded, err)
	a.mu.Lock()
	d := &a.devs[b.dev]
	d.batches++
	d.requests += uint64(len(b.reqs))
	if err == nil {
		d.tokens += uint64(b.tokens)
	} else if status.CodeOf(err) == status.DeviceFailed {
		if d.failed == nil {
			d.failed = err
		}
		d.lost += uint64(b.alive)
		err = status.Wrap(status.DeviceFailed, err, fmt.Sprintf("the request's batch was computing on device %d when it failed; the engine's other devices keep serving, resubmit it", b.dev))
	}
	a.mu.Unlock()
	if err == nil && dur > 0 {
		sample := b.cost / dur.Seconds() * float64(b.conc)
		a.mu.Lock()
		if a.rate == 0 {
			a.rate = sample
		} else {
			a.rate += 0.3 * (sample - a.rate)
		}
		a.mu.Unlock()
	}
	b.err = err
}

// dispatch hands each request of a finished batch to a deliverer.
func (a *Async) dispatch() {
	defer close(a.deliver)
	for b := range a.finished {
		for lo := 0; lo < len(b.reqs); lo += deliverChunk {
			a.deliver <- delivery{b, lo, min(lo+deliverChunk, len(b.reqs))}
		}
	}
}

// deliverOne scatters, delivers and completes request i of b, unless it
// completed already (cancelled, expired, shut down).
func (a *Async) deliverOne(b *batch, i int) {
	if b.tr != nil {
		defer a.traced(b)
	}
	r := b.reqs[i]
	a.mu.Lock()
	if r.state != stateBatched || r.inBatch != b {
		a.mu.Unlock()
		return
	}
	r.state = stateDelivering
	b.alive--
	a.mu.Unlock()
	err := b.err
	if err == nil && len(b.reqs) > 1 {
		err = a.protect("scatter", func() error { a.scatter(b, i); return nil })
	}
	if err == nil && r.opts.Deliver != nil {
		err = a.protect("output delivery", r.opts.Deliver)
	}
	a.finish(r, err)
}

// traced counts a member of a traced batch as handled and, after the last,
// reports the batch.
func (a *Async) traced(b *batch) {
	if int(b.delivered.Add(1)) == len(b.reqs) {
		b.tr.Delivered = time.Now()
		_ = a.protect("batch trace", func() error { a.trace(*b.tr); return nil })
	}
}

// scatter copies request i's hidden states out of the merged batch and
// pools them.
func (a *Async) scatter(b *batch, i int) {
	H := b.t.merge.hiddenSize()
	in, out := &b.ins[i], &b.outs[i]
	if b.pooled != nil {
		s := b.seqOffs[i]
		copy(out.Pooled, b.pooled[s*H:(s+in.NumSeqs())*H])
		return
	}
	off := b.offsets[i]
	hid := b.hidden[off*H : (off+len(in.Tokens))*H]
	if out.Hidden != nil {
		copy(out.Hidden, hid)
	}
	b.t.merge.fromHidden(in, hid, out)
}

// finish completes r with err (its state is owned by the caller).
func (a *Async) finish(r *Request, err error) {
	if r.timer != nil {
		r.timer.Stop()
	}
	a.mu.Lock()
	r.state, r.inBatch = stateDone, nil
	delete(r.t.live, r)
	a.live--
	if a.live == 0 && a.drained != nil {
		select {
		case <-a.drained:
		default:
			close(a.drained)
		}
	}
	a.mu.Unlock()

	if err == nil {
		a.stats.totalLat.record(time.Since(r.submitted))
	}
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

// Cancel asks to cancel the request. If it has not started being
// delivered, it completes with status.Cancelled at once (its callback runs
// on another goroutine), and its batch, if it is computing and has no other
// member left, stops early. Cancelling a completed request (or one being
// delivered) does nothing.
func (r *Request) Cancel() {
	r.cancelWith(status.Errorf(status.Cancelled, "request cancelled"), true)
}

// cancelWith completes r with cause unless it is being delivered or done;
// spawn runs the completion on a new goroutine when r has a callback.
func (r *Request) cancelWith(cause error, spawn bool) {
	a := r.t.a
	a.mu.Lock()
	var stopBatch context.CancelFunc
	switch r.state {
	case stateQueued:
		a.sched.Remove(r)
		a.freeSpace(false)
	case stateBatched:
		b := r.inBatch
		b.alive--
		if b.alive == 0 {
			stopBatch = b.cancel
		}
	default:
		a.mu.Unlock()
		return
	}
	r.state = stateFinishing
	a.mu.Unlock()
	if stopBatch != nil {
		stopBatch()
	}
	if spawn && r.opts.Done != nil {
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

// devState is the pipeline's view of one device (guarded by a.mu).
type devState struct {
	busy, long int     // lanes computing, of them long batches
	load       float64 // cost of the batches on its lanes: the outstanding work
	failed     error   // sticky
	batches    uint64
	requests   uint64
	tokens     uint64
	requeued   uint64 // requests of batches formed for it that went back to the queue
	lost       uint64 // requests computing on it when it failed
}

// deviceFailed checks device i's health (a.mu held) and records a failure.
func (a *Async) deviceFailed(i int) bool {
	d := &a.devs[i]
	if d.failed == nil && a.devErr != nil {
		if err := a.devErr(i); err != nil {
			d.failed = err
			if a.log != nil {
				a.log(LogWarn, fmt.Sprintf("device %d takes no more batches: %v", i, err))
			}
		}
	}
	return d.failed != nil
}

// pickDevice chooses the device of the next batch (a.mu held): the healthy
// device with a free lane and the least outstanding cost (then the fewest
// busy lanes, then the lowest index). It returns that device, its first
// free lane, its free lanes, and the free lanes of every healthy device;
// dev -1 when no healthy device has a free lane, -2 when every device
// failed.
func (a *Async) pickDevice() (dev, lane, free, allFree int) {
	dev, lane = -1, -1
	healthy := 0
	for i := range a.devs {
		if a.deviceFailed(i) {
			continue
		}
		healthy++
		d := &a.devs[i]
		f := a.lanesPer - d.busy
		allFree += f
		if f == 0 {
			continue
		}
		if dev < 0 || d.load < a.devs[dev].load || (d.load == a.devs[dev].load && d.busy < a.devs[dev].busy) {
			dev, free = i, f
		}
	}
	if healthy == 0 {
		return -2, -1, 0, 0
	}
	if dev >= 0 {
		for l := dev * a.lanesPer; l < (dev+1)*a.lanesPer; l++ {
			if !a.laneBusy[l] {
				lane = l
				break
			}
		}
	}
	return dev, lane, free, allFree
}

// allFailedErr is the status of requests once every device failed.
func (a *Async) allFailedErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var last error
	for i := range a.devs {
		last = a.devs[i].failed
	}
	if len(a.devs) == 1 && last != nil {
		return status.Wrap(status.DeviceFailed, last, "the engine's device failed")
	}
	return status.Wrap(status.DeviceFailed, last, fmt.Sprintf("every device of the engine (%d) failed", len(a.devs)))
}

// orphansLocked lists the queued requests (a.mu held), to fail them when
// every device failed.
func (a *Async) orphansLocked() []*Request {
	var out []*Request
	for t := range a.targets {
		for r := range t.live {
			if r.state == stateQueued {
				out = append(out, r)
			}
		}
	}
	return out
}

// requeueIfFailed puts the members of b back in the queue when b's device
// failed before b started, so that a healthy device runs them, and reports
// whether it did. Each request keeps its place (priority, due time,
// arrival); it completes exactly once, through whichever batch takes it.
func (a *Async) requeueIfFailed(b *batch) bool {
	a.mu.Lock()
	if !a.deviceFailed(b.dev) {
		a.mu.Unlock()
		return false
	}
	d := &a.devs[b.dev]
	for _, r := range b.reqs {
		if r.state == stateBatched && r.inBatch == b {
			r.state, r.inBatch = stateQueued, nil
			a.sched.Push(r)
			d.requeued++
		}
	}
	b.alive = 0
	a.mu.Unlock()
	b.err = status.Errorf(status.DeviceFailed, "device %d failed before the batch started; its requests went back to the queue", b.dev)
	a.wake()
	return true
}

// pooledOnly says whether every output of a merged batch is host pooled
// vectors alone, with one pooling and normalisation: then the merged batch
// is encoded with pooled outputs (a sequence's pooled vector depends on its
// own rows only, so each equals the request's result alone) instead of
// bringing back every token's hidden state and pooling on the host.
func pooledOnly(outs []Outputs) (Outputs, bool) {
	for i := range outs {
		o := &outs[i]
		if o.Pooled == nil || o.Hidden != nil || o.Logits != nil || o.HiddenDevice != 0 || o.PooledDevice != 0 ||
			o.Pooling != outs[0].Pooling || o.Normalize != outs[0].Normalize {
			return Outputs{}, false
		}
	}
	return outs[0], len(outs) > 0
}
