package engine

import (
	"sync/atomic"

	"github.com/raptor-infer/raptor/internal/status"
)

// Stats counts an engine's work. Its methods are safe for concurrent use;
// the zero value is ready. Async updates it for asynchronous requests; a
// synchronous caller records its own batches and results the same way.
type Stats struct {
	submitted atomic.Uint64
	completed atomic.Uint64
	failed    atomic.Uint64
	cancelled atomic.Uint64
	batches   atomic.Uint64
	tokens    atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of the counters.
type StatsSnapshot struct {
	Submitted  uint64 // asynchronous requests accepted
	Completed  uint64 // requests completed successfully (sync and async)
	Failed     uint64 // requests completed with an error other than Cancelled
	Cancelled  uint64 // requests completed with status.Cancelled
	Batches    uint64 // batches run by the backend
	Tokens     uint64 // tokens of successfully encoded batches
	QueueDepth int64  // requests waiting now (filled by Async.Stats)
}

// RecordSubmit counts an accepted asynchronous request.
func (s *Stats) RecordSubmit() { s.submitted.Add(1) }

// RecordBatch counts a batch the backend ran; its tokens count only when it
// succeeded.
func (s *Stats) RecordBatch(tokens int, err error) {
	s.batches.Add(1)
	if err == nil && tokens > 0 {
		s.tokens.Add(uint64(tokens))
	}
}

// RecordResult counts a request's completion with result err.
func (s *Stats) RecordResult(err error) {
	switch status.CodeOf(err) {
	case status.OK:
		s.completed.Add(1)
	case status.Cancelled:
		s.cancelled.Add(1)
	default:
		s.failed.Add(1)
	}
}

// RecordSync counts a synchronous encode like an asynchronous request: a
// call rejected before it ran (bad input, a freed model, shutdown) counts
// nothing, as a rejected Submit does; any other call counts one batch and
// one result.
func (s *Stats) RecordSync(tokens int, err error) {
	switch status.CodeOf(err) {
	case status.InvalidArgument, status.OutOfRange, status.BufferTooSmall, status.InvalidHandle, status.Shutdown:
		return
	}
	s.RecordBatch(tokens, err)
	s.RecordResult(err)
}

// Snapshot returns the counters. QueueDepth is left zero.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Submitted: s.submitted.Load(),
		Completed: s.completed.Load(),
		Failed:    s.failed.Load(),
		Cancelled: s.cancelled.Load(),
		Batches:   s.batches.Load(),
		Tokens:    s.tokens.Load(),
	}
}
