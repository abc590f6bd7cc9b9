package engine

import (
	"container/list"
	"math/bits"
	"slices"
	"time"
)

// Scheduler turns the queue of an Async into batches. Async calls every
// method with its mutex held, so an implementation needs no locking of its
// own and must not block.
type Scheduler interface {
	// Push queues r. Async enforces the queue capacity before calling it.
	Push(r *Request)
	// Remove takes r out of the queue (it was cancelled, or its deadline
	// passed); false if r was not queued.
	Remove(r *Request) bool
	// Len is the number of queued requests.
	Len() int
	// Next is called when a compute lane is free and the queue is not
	// empty. It returns the requests of the next batch, all of one Target,
	// taken out of the queue; or nil and the time to ask again (the zero
	// time: when the queue or the lanes change).
	Next(s *SchedState) (batch []*Request, wake time.Time)
}

// SchedState is what a Scheduler knows when it forms a batch.
type SchedState struct {
	Now            time.Time
	MaxBatchTokens int           // token budget of a batch (one larger request runs alone)
	MaxQueueDelay  time.Duration // a batch closes when its oldest request waited this long
	// Draining: no request will arrive any more; close batches at once.
	Draining bool
	// ShortOnly: every other lane runs a long batch, so this one must be
	// short (cost at most its Target's LongCost), leaving a lane for short
	// requests while long ones compute.
	ShortOnly bool
	// OtherFreeLanes is how many lanes besides this batch's are free: a
	// request left out of this batch can start at once in another, so the
	// batch keeps to similar lengths.
	OtherFreeLanes int
	// Predict is the expected wall time of a batch of the given cost
	// started now, with the lanes busy as they are; 0 while no batch has
	// been measured yet.
	Predict func(cost float64) time.Duration
}

// NewFIFO returns a Scheduler that runs requests one per batch, in arrival
// order, at once (no queue delay): submit-one-at-a-time.
func NewFIFO() Scheduler { return &fifo{} }

type fifo struct{ l list.List }

func (f *fifo) Push(r *Request) { r.schedElem = f.l.PushBack(r) }

func (f *fifo) Next(*SchedState) ([]*Request, time.Time) {
	e := f.l.Front()
	if e == nil {
		return nil, time.Time{}
	}
	f.l.Remove(e)
	r := e.Value.(*Request)
	r.schedElem = nil
	return []*Request{r}, time.Time{}
}

func (f *fifo) Remove(r *Request) bool {
	e, ok := r.schedElem.(*list.Element)
	if !ok || e == nil {
		return false
	}
	f.l.Remove(e)
	r.schedElem = nil
	return true
}

func (f *fifo) Len() int { return f.l.Len() }

// NewLengthAware returns the default Scheduler: dynamic, length-aware
// batching with priorities and deadlines.
//
// Order. Requests are ranked by priority (higher first), then by due time
// (the deadline, or submit time + the Async's DefaultSlack for a request
// without one: earliest deadline first, FIFO among requests without
// deadlines), then by arrival. The best-ranked request is the next batch's
// anchor; a higher priority always goes first (strict priority).
//
// Closing. A batch closes when its Target's queued tokens reach the token
// budget, when the oldest queued request has waited MaxQueueDelay, or early
// enough for a deadline (deadline - 2x the request's predicted compute
// time), whichever comes first; at once when draining.
//
// Filling. After the anchor, requests of the same Target join in two
// passes, each while the token budget holds: first those due before the
// batch after this one could finish (in rank order), then the rest by
// length class (⌊log2 of the longest sequence⌋) nearest the anchor's, so a
// batch groups similar lengths: GEMMs stay large and attention work per
// sequence stays balanced. While another lane is free, the second pass
// takes only the anchor's and the neighbouring classes: the others start at
// once in the free lane instead of lengthening this batch. A request joins only if the batch's predicted
// finish (SchedState.Predict of the cost model, SequenceCost) stays within
// the deadline of every member that could still make it, so a long request
// never holds short ones past their deadlines; and while the other lanes
// run long batches, only a short batch is formed (SchedState.ShortOnly),
// except for a Target whose device runs every lane on one stream (the GPU).
//
// Every queued request is scanned once per batch: O(queue) per batch.
func NewLengthAware() Scheduler { return &lengthAware{} }

// NewLeastSlack returns the length-aware scheduler with every request held
// to a latency goal: its due time (the deadline, or submit time + the
// Async's DefaultSlack, which then serves as the latency objective rather
// than for ordering only). Within a priority, requests go by least slack:
// latest start first (due time - predicted time alone, so of two requests
// due together the longer goes first), and a request joins a batch only
// while every member that can still meet its goal does (the batch would
// otherwise finish late for one of them). DefaultSlack should then be the
// latency target. Not the default: on the 2-core CPU, with one lane, it
// beat one lane with the default scheduler (p99 367 vs 542 ms at 50% load)
// but not the default two lanes (345 ms); see the issue-8 section of
// bench/RESULTS.md.
func NewLeastSlack() Scheduler { return &lengthAware{slack: true} }

type lengthAware struct {
	q     []*Request
	slack bool // NewLeastSlack
}

// goal is the time r should be done by: its deadline, or with slack its due time.
func (s *lengthAware) goal(r *Request) time.Time {
	if s.slack {
		return r.due
	}
	return r.deadline
}

// less ranks r before o: r.before(o), or with slack by latest start.
func (s *lengthAware) less(r, o *Request, st *SchedState) bool {
	if !s.slack || r.prio != o.prio {
		return r.before(o)
	}
	rStart, oStart := r.due.Add(-st.Predict(r.cost)), o.due.Add(-st.Predict(o.cost))
	if !rStart.Equal(oStart) {
		return rStart.Before(oStart)
	}
	return r.seq < o.seq
}

func (s *lengthAware) Push(r *Request) {
	r.schedElem = len(s.q)
	s.q = append(s.q, r)
}

func (s *lengthAware) Remove(r *Request) bool {
	i, ok := r.schedElem.(int)
	if !ok || i < 0 || i >= len(s.q) || s.q[i] != r {
		return false
	}
	last := len(s.q) - 1
	s.q[i] = s.q[last]
	s.q[i].schedElem = i
	s.q[last] = nil
	s.q = s.q[:last]
	r.schedElem = nil
	return true
}

func (s *lengthAware) Len() int { return len(s.q) }

// before ranks requests: priority, due time, arrival.
func (r *Request) before(o *Request) bool {
	if r.prio != o.prio {
		return r.prio > o.prio
	}
	if !r.due.Equal(o.due) {
		return r.due.Before(o.due)
	}
	return r.seq < o.seq
}

// lengthClass is ⌊log2⌋ of the request's longest sequence.
func (r *Request) lengthClass() int { return bits.Len(uint(r.maxLen)) }

func (s *lengthAware) eligible(r *Request, st *SchedState) bool {
	return !st.ShortOnly || r.t.oneStream || r.cost <= r.t.longCost
}

func (s *lengthAware) Next(st *SchedState) ([]*Request, time.Time) {
	now := st.Now
	var anchor *Request
	var closeAt time.Time
	for _, r := range s.q {
		if !s.eligible(r, st) {
			continue
		}
		if anchor == nil || s.less(r, anchor, st) {
			anchor = r
		}
		c := r.submitted.Add(st.MaxQueueDelay)
		if !r.deadline.IsZero() {
			if d := r.deadline.Add(-2 * st.Predict(r.cost)); d.Before(c) {
				c = d
			}
		}
		if closeAt.IsZero() || c.Before(closeAt) {
			closeAt = c
		}
	}
	if anchor == nil {
		return nil, time.Time{}
	}
	if !st.Draining && now.Before(closeAt) && !anchor.solo {
		tokens := 0
		for _, r := range s.q {
			if r.t == anchor.t && !r.solo && s.eligible(r, st) {
				tokens += r.tokens
			}
		}
		if tokens < st.MaxBatchTokens {
			return nil, closeAt
		}
	}
	members := s.fill(anchor, st)
	for _, r := range members {
		s.Remove(r)
	}
	return members, time.Time{}
}

// fill picks the members of the batch anchored at a.
func (s *lengthAware) fill(a *Request, st *SchedState) []*Request {
	members := []*Request{a}
	if a.solo {
		return members
	}
	var cands []*Request
	for _, r := range s.q {
		if r != a && r.t == a.t && !r.solo && s.eligible(r, st) {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return members
	}
	now := st.Now
	tokens, cost := a.tokens, a.cost
	var limit time.Time // the earliest deadline (goal) of a member that can still make it
	if g := s.goal(a); !g.IsZero() && !now.Add(st.Predict(cost)).After(g) {
		limit = g
	}
	add := func(c *Request) bool {
		if tokens+c.tokens > st.MaxBatchTokens {
			return false
		}
		nc := cost + c.cost
		if st.ShortOnly && !a.t.oneStream && nc > a.t.longCost {
			return false
		}
		fin := now.Add(st.Predict(nc))
		if !limit.IsZero() && fin.After(limit) {
			return false // a member would miss its deadline
		}
		g := s.goal(c)
		if !g.IsZero() && fin.After(g) && !now.Add(st.Predict(c.cost)).After(g) {
			return false // c would miss its deadline in this batch, not in a smaller one
		}
		if !g.IsZero() && !fin.After(g) && (limit.IsZero() || g.Before(limit)) {
			limit = g
		}
		tokens, cost = tokens+c.tokens, nc
		members = append(members, c)
		return true
	}
	slices.SortFunc(cands, func(x, y *Request) int {
		if s.less(x, y, st) {
			return -1
		}
		return 1
	})
	// Pass 1: requests that cannot wait for the batch after this one.
	horizon := now.Add(st.Predict(float64(st.MaxBatchTokens)*a.t.tokenCost) + st.MaxQueueDelay)
	rest := cands[:0:0]
	for _, c := range cands {
		if c.due.After(horizon) || !add(c) {
			rest = append(rest, c)
		}
	}
	// Pass 2: the nearest length classes first, in rank order within one.
	ac := a.lengthClass()
	dist := func(r *Request) int {
		d := r.lengthClass() - ac
		if d < 0 {
			return -d
		}
		return d
	}
	slices.SortStableFunc(rest, func(x, y *Request) int { return dist(x) - dist(y) })
	for _, c := range rest {
		if tokens >= st.MaxBatchTokens || (st.OtherFreeLanes > 0 && dist(c) > 1) {
			break
		}
		add(c)
	}
	return members
}
