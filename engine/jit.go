package engine

import "time"

// Closing batches "just in time" on a one-stream device (AsyncOptions.JustInTime).
//
// The CUDA backend runs every batch of a device in order on one stream, and
// a forward there costs a fixed ~0.18 ms of small kernels whatever its size
// (all-MiniLM-L6-v2, bench/RESULTS.md, issue 8). An eager former closes a
// batch whenever a lane is free: the batch then waits on the stream behind
// the ones already there, with only the requests that had arrived when it
// closed, and each later arrival waits for yet another batch. Closing just
// in time instead holds a batch that is not full until the stream is
// predicted to run dry (minus jitLead, the host work of forming and
// launching it): it starts no later than it would have, and the requests
// that arrive meanwhile ride in it instead of queueing behind it. A request
// with a deadline is never held past the point where it would close for its
// deadline (lengthAware.Next).
//
// The prediction: each device's batches in flight in order, each starting
// when it was handed to its lane or when the one before it is predicted to
// end, whichever is later, and lasting svcModel's fitted service time.

// jitLead is how long before the stream is predicted to run dry a held
// batch closes: packing, the lane hand-off and the device worker's host
// enqueue of a CUDA graph (~0.1 ms measured on the H100, bench/RESULTS.md,
// issue 8, runs 9-12).
const jitLead = 150 * time.Microsecond

// svcModel is a device's service time per batch, x = fixed + perCost*cost,
// fitted by exponentially weighted least squares over its recent batches
// (x: from when the batch reached its lane, or when the batch before it
// ended if that was later, to its end).
type svcModel struct {
	n               int
	w, c, x, cc, cx float64 // weighted sums of 1, cost, x, cost^2, cost*x
	fixed, perCost  float64 // the fit: seconds, and seconds per cost unit
}

// svcDecay weights the batch k batches back by svcDecay^k (an effective
// window of ~20 batches).
const svcDecay = 0.95

// svcMinSamples batches are needed before the model predicts anything.
const svcMinSamples = 4

func (m *svcModel) add(cost float64, x time.Duration) {
	s := x.Seconds()
	if s < 0 || cost < 0 {
		return
	}
	m.n++
	m.w = svcDecay*m.w + 1
	m.c = svcDecay*m.c + cost
	m.x = svcDecay*m.x + s
	m.cc = svcDecay*m.cc + cost*cost
	m.cx = svcDecay*m.cx + cost*s
	mc, mx := m.c/m.w, m.x/m.w
	beta := 0.0
	if vc := m.cc/m.w - mc*mc; vc > 1e-9*mc*mc && vc > 0 {
		beta = max((m.cx/m.w-mc*mx)/vc, 0)
	}
	m.perCost = beta
	m.fixed = max(mx-beta*mc, 0)
}

// predict is the service time of a batch of the given cost; ok false while
// too few batches were seen.
func (m *svcModel) predict(cost float64) (time.Duration, bool) {
	if m.n < svcMinSamples {
		return 0, false
	}
	return time.Duration((m.fixed + m.perCost*cost) * float64(time.Second)), true
}

// streamFree predicts when a one-stream device finishes the batches it has
// (d.fly, in order; d.lastEnd: when its last batch ended): the zero time if
// it has none or the model cannot tell yet.
func streamFree(d *devState) time.Time {
	if len(d.fly) == 0 {
		return time.Time{}
	}
	cur := d.lastEnd
	for _, b := range d.fly {
		p, ok := d.svc.predict(b.cost)
		if !ok {
			return time.Time{}
		}
		begin := b.start
		if begin.IsZero() {
			begin = b.formed
		}
		if begin.Before(cur) {
			begin = cur
		}
		cur = begin.Add(p)
	}
	return cur
}
