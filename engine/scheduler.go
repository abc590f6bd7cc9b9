package engine

import "container/list"

// Scheduler orders the queued requests of an Async. Async calls every method
// with its mutex held, so an implementation needs no locking of its own and
// must not block.
//
// This is the seam for the length-aware batching scheduler: the FIFO below
// runs one request per batch in arrival order.
type Scheduler interface {
	// Push queues r. Async enforces the queue capacity before calling it.
	Push(r *Request)
	// Pop removes and returns the next request to run, or nil if none.
	Pop() *Request
	// Remove takes r out of the queue (it was cancelled); false if r was not
	// queued.
	Remove(r *Request) bool
	// Len is the number of queued requests.
	Len() int
}

// NewFIFO returns a Scheduler that runs requests in arrival order.
func NewFIFO() Scheduler { return &fifo{} }

type fifo struct{ l list.List }

func (f *fifo) Push(r *Request) { r.schedElem = f.l.PushBack(r) }

func (f *fifo) Pop() *Request {
	e := f.l.Front()
	if e == nil {
		return nil
	}
	f.l.Remove(e)
	r := e.Value.(*Request)
	r.schedElem = nil
	return r
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
