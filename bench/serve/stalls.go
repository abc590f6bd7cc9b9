package main

import (
	"fmt"
	"math"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// stallSample is what can stall the whole process, read at a round's start
// and end: the container's CPU throttling (cgroup cpu.stat), the
// hypervisor's steal time (/proc/stat), and the Go runtime's scheduling
// latency and GC pauses (runtime/metrics histograms).
type stallSample struct {
	throttled     int64         // periods the cgroup was throttled in
	throttledTime time.Duration // time it was throttled
	steal         int64         // /proc/stat steal ticks, all CPUs
	sched, gc     *metrics.Float64Histogram
}

// Stalls is a round's difference of two samples.
type Stalls struct {
	ThrottledPeriods int64   `json:"throttled_periods"`
	ThrottledMs      float64 `json:"throttled_ms"`
	StealMs          float64 `json:"steal_ms"`         // summed over CPUs
	SchedP99us       float64 `json:"sched_lat_p99_us"` // goroutine runnable -> running
	SchedMaxMs       float64 `json:"sched_lat_max_ms"` // upper bound of the highest bucket hit
	GCPauseMaxMs     float64 `json:"gc_pause_max_ms"`
	GCPauses         uint64  `json:"gc_pauses"`
}

func (s Stalls) String() string {
	return fmt.Sprintf("throttled %d periods %.1f ms, steal %.1f ms, sched latency p99 %.0f us max %.2f ms, %d GC pauses max %.2f ms",
		s.ThrottledPeriods, s.ThrottledMs, s.StealMs, s.SchedP99us, s.SchedMaxMs, s.GCPauses, s.GCPauseMaxMs)
}

var stallMetrics = []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}}

func sampleStalls() stallSample {
	var s stallSample
	// cgroup v2, then v1
	for _, p := range []string{"/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpu,cpuacct/cpu.stat", "/sys/fs/cgroup/cpu/cpu.stat"} {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "nr_throttled":
				s.throttled = v
			case "throttled_usec":
				s.throttledTime = time.Duration(v) * time.Microsecond
			case "throttled_time": // v1, ns
				s.throttledTime = time.Duration(v)
			}
		}
		break
	}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
		if len(f) > 8 {
			s.steal, _ = strconv.ParseInt(f[8], 10, 64)
		}
	}
	metrics.Read(stallMetrics)
	if stallMetrics[0].Value.Kind() == metrics.KindFloat64Histogram {
		s.sched = copyHist(stallMetrics[0].Value.Float64Histogram())
	}
	if stallMetrics[1].Value.Kind() == metrics.KindFloat64Histogram {
		s.gc = copyHist(stallMetrics[1].Value.Float64Histogram())
	}
	return s
}

func copyHist(h *metrics.Float64Histogram) *metrics.Float64Histogram {
	return &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: append([]float64(nil), h.Buckets...)}
}

// histDelta returns the quantile q and the upper bound of the highest
// non-empty bucket of b minus a (seconds), and the count.
func histDelta(a, b *metrics.Float64Histogram, q float64) (quant, maxv float64, n uint64) {
	if a == nil || b == nil || len(a.Counts) != len(b.Counts) {
		return 0, 0, 0
	}
	d := make([]uint64, len(b.Counts))
	for i := range d {
		d[i] = b.Counts[i] - a.Counts[i]
		n += d[i]
	}
	if n == 0 {
		return 0, 0, 0
	}
	upper := func(i int) float64 {
		u := b.Buckets[i+1]
		if math.IsInf(u, 1) {
			u = b.Buckets[i]
		}
		return u
	}
	target := uint64(math.Ceil(q * float64(n)))
	var run uint64
	quant = -1
	for i, c := range d {
		run += c
		if quant < 0 && run >= target {
			quant = upper(i)
		}
		if c > 0 {
			maxv = upper(i)
		}
	}
	return quant, maxv, n
}

func stallsBetween(a, b stallSample) Stalls {
	var s Stalls
	s.ThrottledPeriods = b.throttled - a.throttled
	s.ThrottledMs = float64(b.throttledTime-a.throttledTime) / 1e6
	s.StealMs = float64(b.steal-a.steal) / clockTicks * 1e3
	q, mx, _ := histDelta(a.sched, b.sched, 0.99)
	s.SchedP99us, s.SchedMaxMs = q*1e6, mx*1e3
	_, mx, n := histDelta(a.gc, b.gc, 0.99)
	s.GCPauseMaxMs, s.GCPauses = mx*1e3, n
	return s
}
