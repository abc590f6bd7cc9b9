package engine

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// StatusSlots is the length of the per-status arrays of StatsSnapshot: one
// slot per status code, with room for codes added later.
const StatusSlots = 32

// RateWindow is the window of StatsSnapshot's TokensPerSecond and
// DeviceBusyShare.
const RateWindow = 10 * time.Second

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

	byStatus [StatusSlots]atomic.Uint64 // completions by final status
	rejected [StatusSlots]atomic.Uint64 // submits refused, by status

	schedBatches  atomic.Uint64 // batches formed by the scheduler
	schedRequests atomic.Uint64 // requests in them
	schedTokens   atomic.Uint64 // tokens in them
	paddedTokens  atomic.Uint64 // padding computed (CUDA graph classes; packing adds none)
	budget        atomic.Int64  // the scheduler's token budget, for the fill ratio

	queueLat latencyHist // submit to the start of the request's batch
	totalLat latencyHist // submit to completion, successful requests

	mu     sync.Mutex
	start  time.Time // first use; the rate window's origin
	active int       // batches computing now
	since  time.Time // start of the current busy interval (active > 0)
	busy   time.Duration
	win    [windowSlots]windowSlot
}

const windowSlots = 16 // > RateWindow in seconds, so slots are not reused within it

type windowSlot struct {
	sec    int64 // seconds since Stats.start; the slot holds that second
	tokens uint64
	busy   time.Duration
}

// StatsSnapshot is a point-in-time copy of the counters.
type StatsSnapshot struct {
	Submitted  uint64 // asynchronous requests accepted
	Completed  uint64 // requests completed successfully (sync and async)
	Failed     uint64 // requests completed with an error other than Cancelled
	Cancelled  uint64 // requests completed with status.Cancelled
	Batches    uint64 // batches run by the backend (sync and async)
	Tokens     uint64 // tokens of successfully encoded batches
	QueueDepth int64  // requests waiting now (filled by Async.Stats)

	QueueCapacity int64 // the Async's queue capacity (filled by Async.Stats)

	// CompletedByStatus counts completions (sync and async) by final status
	// code; RejectedByStatus counts submits refused (BUSY, SHUTDOWN, bad
	// input...) by status code.
	CompletedByStatus [StatusSlots]uint64
	RejectedByStatus  [StatusSlots]uint64

	SchedBatches      uint64  // batches the scheduler formed
	SchedRequests     uint64  // requests those batches held
	MeanBatchRequests float64 // SchedRequests / SchedBatches
	MeanBatchFill     float64 // mean tokens per scheduler batch / MaxBatchTokens
	PaddedTokens      uint64  // padding tokens computed: 0 from packing; CUDA graph classes add some (Outputs.PaddedTokens)
	PaddingRatio      float64 // PaddedTokens / (Tokens + PaddedTokens)

	QueueLatencyP50, QueueLatencyP99 time.Duration // submit to batch start, async requests
	QueueLatencySum                  time.Duration
	QueueLatencyCount                uint64
	LatencyP50, LatencyP99           time.Duration // submit to completion, successful async requests
	LatencySum                       time.Duration
	LatencyCount                     uint64

	Uptime          time.Duration // since the Stats were first used
	DeviceBusy      time.Duration // time with at least one batch computing
	TokensPerSecond float64       // tokens encoded per second over the last RateWindow
	DeviceBusyShare float64       // share of the last RateWindow with a batch computing
}

func (s *Stats) startLocked(now time.Time) {
	if s.start.IsZero() {
		s.start = now
	}
}

// RecordSubmit counts an accepted asynchronous request.
func (s *Stats) RecordSubmit() { s.submitted.Add(1) }

// RecordReject counts a refused submit with its error.
func (s *Stats) RecordReject(err error) {
	if c := status.CodeOf(err); c >= 0 && c < StatusSlots {
		s.rejected[c].Add(1)
	}
}

// RecordBatch counts a batch the backend ran; its tokens and the padding
// tokens it computed count only when it succeeded.
func (s *Stats) RecordBatch(tokens, padded int, err error) {
	s.batches.Add(1)
	if padded > 0 && err == nil {
		s.paddedTokens.Add(uint64(padded))
	}
	if err == nil && tokens > 0 {
		s.tokens.Add(uint64(tokens))
		s.mu.Lock()
		now := time.Now()
		s.startLocked(now)
		s.slot(now).tokens += uint64(tokens)
		s.mu.Unlock()
	}
}

// recordSchedBatch counts a batch the scheduler formed.
func (s *Stats) recordSchedBatch(requests, tokens int) {
	s.schedBatches.Add(1)
	s.schedRequests.Add(uint64(requests))
	s.schedTokens.Add(uint64(tokens))
}

// RecordResult counts a request's completion with result err.
func (s *Stats) RecordResult(err error) {
	c := status.CodeOf(err)
	switch c {
	case status.OK:
		s.completed.Add(1)
	case status.Cancelled:
		s.cancelled.Add(1)
	default:
		s.failed.Add(1)
	}
	if c >= 0 && c < StatusSlots {
		s.byStatus[c].Add(1)
	}
}

// RecordSync counts a synchronous encode like an asynchronous request: a
// call rejected before it ran (bad input, a freed model, shutdown) counts
// nothing, as a rejected Submit does; any other call counts one batch and
// one result.
func (s *Stats) RecordSync(tokens, padded int, err error) {
	switch status.CodeOf(err) {
	case status.InvalidArgument, status.OutOfRange, status.BufferTooSmall, status.InvalidHandle, status.Shutdown:
		return
	}
	s.RecordBatch(tokens, padded, err)
	s.RecordResult(err)
}

// BeginCompute marks the device busy until the returned function is called
// (once). Intervals of overlapping batches count once.
func (s *Stats) BeginCompute() (end func()) {
	s.mu.Lock()
	now := time.Now()
	s.startLocked(now)
	if s.active == 0 {
		s.since = now
	}
	s.active++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.active--
			if s.active == 0 {
				s.addBusy(s.since, time.Now())
			}
			s.mu.Unlock()
		})
	}
}

// addBusy adds the busy interval [from, to) to the total and the window.
func (s *Stats) addBusy(from, to time.Time) {
	if !to.After(from) {
		return
	}
	s.busy += to.Sub(from)
	for from.Before(to) {
		sl := s.slot(from)
		end := s.start.Add(time.Duration(sl.sec+1) * time.Second)
		if end.After(to) {
			end = to
		}
		sl.busy += end.Sub(from)
		from = end
	}
}

// slot returns the window slot of time t (s.mu held, s.start set).
func (s *Stats) slot(t time.Time) *windowSlot {
	sec := int64(max(t.Sub(s.start), 0) / time.Second)
	sl := &s.win[sec%windowSlots]
	if sl.sec != sec {
		*sl = windowSlot{sec: sec}
	}
	return sl
}

// Snapshot returns the counters. QueueDepth and QueueCapacity are left zero.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		Submitted:     s.submitted.Load(),
		Completed:     s.completed.Load(),
		Failed:        s.failed.Load(),
		Cancelled:     s.cancelled.Load(),
		Batches:       s.batches.Load(),
		Tokens:        s.tokens.Load(),
		SchedBatches:  s.schedBatches.Load(),
		SchedRequests: s.schedRequests.Load(),
		PaddedTokens:  s.paddedTokens.Load(),
	}
	for i := range snap.CompletedByStatus {
		snap.CompletedByStatus[i] = s.byStatus[i].Load()
		snap.RejectedByStatus[i] = s.rejected[i].Load()
	}
	if snap.SchedBatches > 0 {
		snap.MeanBatchRequests = float64(snap.SchedRequests) / float64(snap.SchedBatches)
		if b := s.budget.Load(); b > 0 {
			snap.MeanBatchFill = float64(s.schedTokens.Load()) / float64(snap.SchedBatches) / float64(b)
		}
	}
	if snap.Tokens+snap.PaddedTokens > 0 {
		snap.PaddingRatio = float64(snap.PaddedTokens) / float64(snap.Tokens+snap.PaddedTokens)
	}
	snap.QueueLatencyP50, snap.QueueLatencyP99 = s.queueLat.quantile(0.5), s.queueLat.quantile(0.99)
	snap.QueueLatencySum, snap.QueueLatencyCount = s.queueLat.total()
	snap.LatencyP50, snap.LatencyP99 = s.totalLat.quantile(0.5), s.totalLat.quantile(0.99)
	snap.LatencySum, snap.LatencyCount = s.totalLat.total()

	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.startLocked(now)
	busy := s.busy
	if s.active > 0 { // the ongoing interval, as far as it went
		busy += now.Sub(s.since)
	}
	snap.Uptime, snap.DeviceBusy = now.Sub(s.start), busy
	cur := int64(now.Sub(s.start) / time.Second)
	const n = int64(RateWindow / time.Second)
	from := s.start
	if cur >= n {
		from = s.start.Add(time.Duration(cur-n+1) * time.Second)
	}
	span := now.Sub(from)
	var tokens uint64
	var busyWin time.Duration
	for _, sl := range s.win {
		if sl.sec > cur-n && sl.sec <= cur {
			tokens += sl.tokens
			busyWin += sl.busy
		}
	}
	if s.active > 0 {
		since := s.since
		if since.Before(from) {
			since = from
		}
		busyWin += now.Sub(since)
	}
	if span > 0 {
		snap.TokensPerSecond = float64(tokens) / span.Seconds()
		snap.DeviceBusyShare = min(1, busyWin.Seconds()/span.Seconds())
	}
	return snap
}

// latencyHist is a log-linear histogram of durations in microseconds:
// exact below 16 µs, then 16 buckets per octave (at most 1/32 relative
// error), up to 2^40 µs (12 days).
type latencyHist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sumUS  atomic.Uint64
}

const (
	histSub     = 16
	histOctaves = 41
	histBuckets = histSub * (histOctaves - 3)
)

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - 1 // >= 4
	i := (e-3)*histSub + int((us>>(e-4))&(histSub-1))
	return min(i, histBuckets-1)
}

// histMid is the middle of bucket i, in microseconds.
func histMid(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := i/histSub + 3
	lo := uint64(histSub+i%histSub) << (e - 4)
	return float64(lo) + float64(uint64(1)<<(e-4))/2
}

func (h *latencyHist) record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[histIndex(us)].Add(1)
	h.sumUS.Add(us)
	h.n.Add(1)
}

// quantile returns the q-quantile (0 if empty).
func (h *latencyHist) quantile(q float64) time.Duration {
	var counts [histBuckets]uint64
	var n uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var acc uint64
	for i, c := range counts {
		acc += c
		if acc >= rank {
			return time.Duration(histMid(i) * float64(time.Microsecond))
		}
	}
	return 0
}

func (h *latencyHist) total() (time.Duration, uint64) {
	return time.Duration(h.sumUS.Load()) * time.Microsecond, h.n.Load()
}

// AsyncDeviceStats are the asynchronous pipeline's counters of one device.
type AsyncDeviceStats struct {
	Index          int     // the device's position in the engine's list
	Failed         bool    // the device failed and takes no more batches
	Batches        uint64  // batches run on it (failed ones included)
	Requests       uint64  // requests in those batches
	Tokens         uint64  // tokens of its successful batches
	Requeued       uint64  // requests of batches formed for it that went back to the queue when it failed
	FailedInFlight uint64  // requests computing on it when it failed (they got status.DeviceFailed)
	Outstanding    float64 // cost of the batches on its lanes now (the load the scheduler balances)
	BusyLanes      int     // lanes computing now
}
