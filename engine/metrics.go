package engine

import (
	"fmt"
	"strconv"

	"github.com/raptor-infer/raptor/internal/status"
)

// Gauge is one extra metric for AppendPrometheus: a gauge without labels.
type Gauge struct {
	Name, Help string
	Value      float64
}

// AppendPrometheus appends the snapshot in the Prometheus text exposition
// format (version 0.0.4) to b, followed by the extra gauges, and returns the
// extended buffer. Every metric name starts with "raptor_".
func (s *StatsSnapshot) AppendPrometheus(b []byte, extra ...Gauge) []byte {
	head := func(name, typ, help string) {
		b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	one := func(name, typ, help string, v float64) {
		head(name, typ, help)
		b = fmt.Appendf(b, "%s %s\n", name, num(v))
	}
	byStatus := func(name, help string, counts *[StatusSlots]uint64) {
		head(name, "counter", help)
		for c := status.OK; c <= status.Timeout; c++ {
			b = fmt.Appendf(b, "%s{status=%q} %d\n", name, c.String(), counts[c])
		}
	}
	summary := func(name, help string, p50, p99, sum float64, count uint64) {
		head(name, "summary", help)
		b = fmt.Appendf(b, "%s{quantile=\"0.5\"} %s\n%s{quantile=\"0.99\"} %s\n%s_sum %s\n%s_count %d\n",
			name, num(p50), name, num(p99), name, num(sum), name, count)
	}

	one("raptor_requests_submitted_total", "counter", "Asynchronous requests accepted.", float64(s.Submitted))
	byStatus("raptor_requests_completed_total", "Requests completed (synchronous and asynchronous), by final status.", &s.CompletedByStatus)
	byStatus("raptor_submits_rejected_total", "Asynchronous submits refused (nothing was queued), by status.", &s.RejectedByStatus)
	one("raptor_queue_depth", "gauge", "Requests waiting in the queue.", float64(s.QueueDepth))
	one("raptor_queue_capacity", "gauge", "Requests the queue holds before submits get BUSY.", float64(s.QueueCapacity))
	summary("raptor_queue_latency_seconds", "Time from submit to the start of the request's batch, since the engine started.",
		s.QueueLatencyP50.Seconds(), s.QueueLatencyP99.Seconds(), s.QueueLatencySum.Seconds(), s.QueueLatencyCount)
	summary("raptor_request_latency_seconds", "Time from submit to completion of successful asynchronous requests, since the engine started.",
		s.LatencyP50.Seconds(), s.LatencyP99.Seconds(), s.LatencySum.Seconds(), s.LatencyCount)
	one("raptor_batches_total", "counter", "Batches run by the backend (synchronous and asynchronous).", float64(s.Batches))
	one("raptor_scheduler_batches_total", "counter", "Batches formed by the scheduler.", float64(s.SchedBatches))
	one("raptor_scheduler_batch_requests_total", "counter", "Requests in the batches the scheduler formed.", float64(s.SchedRequests))
	one("raptor_batch_requests_mean", "gauge", "Mean requests per scheduler batch.", s.MeanBatchRequests)
	one("raptor_batch_fill_ratio", "gauge", "Mean tokens per scheduler batch over the token budget.", s.MeanBatchFill)
	one("raptor_tokens_total", "counter", "Tokens encoded.", float64(s.Tokens))
	one("raptor_padded_tokens_total", "counter", "Padding tokens computed (packing adds none; CUDA graph token-count classes do).", float64(s.PaddedTokens))
	one("raptor_padding_ratio", "gauge", "Padding tokens over all computed tokens.", s.PaddingRatio)
	one("raptor_tokens_per_second", "gauge", "Tokens encoded per second over the last 10 s.", s.TokensPerSecond)
	one("raptor_device_busy_share", "gauge", "Share of the last 10 s with a batch computing.", s.DeviceBusyShare)
	one("raptor_device_busy_seconds_total", "counter", "Time with at least one batch computing.", s.DeviceBusy.Seconds())
	one("raptor_uptime_seconds", "counter", "Time since the engine started.", s.Uptime.Seconds())
	for _, g := range extra {
		one(g.Name, "gauge", g.Help, g.Value)
	}
	return b
}

// AppendDevicePrometheus appends per-device metrics, labelled
// device="<index>",ordinal="<ordinal>", for an engine's devices (infos from
// Engine.Devices, ds from Async.DeviceStats; ds may be nil).
func AppendDevicePrometheus(b []byte, infos []DeviceInfo, ds []AsyncDeviceStats) []byte {
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	metric := func(name, typ, help string, v func(i int) float64) {
		b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for i, d := range infos {
			b = fmt.Appendf(b, "%s{device=\"%d\",ordinal=\"%d\"} %s\n", name, d.Index, d.Ordinal, num(v(i)))
		}
	}
	at := func(i int) AsyncDeviceStats {
		if i < len(ds) {
			return ds[i]
		}
		return AsyncDeviceStats{}
	}
	b2f := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	metric("raptor_device_failed", "gauge", "1 once the device failed (it takes no more work), else 0.", func(i int) float64 { return b2f(infos[i].Failed != nil || at(i).Failed) })
	metric("raptor_device_batches_total", "counter", "Asynchronous batches run on the device.", func(i int) float64 { return float64(at(i).Batches) })
	metric("raptor_device_requests_total", "counter", "Requests in the batches run on the device.", func(i int) float64 { return float64(at(i).Requests) })
	metric("raptor_device_tokens_total", "counter", "Tokens of the device's successful batches.", func(i int) float64 { return float64(at(i).Tokens) })
	metric("raptor_device_requeued_requests_total", "counter", "Requests of batches formed for the device that moved to other devices when it failed.", func(i int) float64 { return float64(at(i).Requeued) })
	metric("raptor_device_failed_in_flight_total", "counter", "Requests computing on the device when it failed.", func(i int) float64 { return float64(at(i).FailedInFlight) })
	metric("raptor_device_outstanding_cost", "gauge", "Cost of the batches on the device's lanes now (the load balanced across devices).", func(i int) float64 { return at(i).Outstanding })
	metric("raptor_device_busy_lanes", "gauge", "Batches computing on the device now.", func(i int) float64 { return float64(at(i).BusyLanes) })
	metric("raptor_device_weight_bytes", "gauge", "Memory of the live models' weights on the device (one copy per model).", func(i int) float64 { return float64(infos[i].WeightBytes) })
	metric("raptor_device_memory_in_use_bytes", "gauge", "Device memory in the engine's pool's live blocks (GPU only).", func(i int) float64 { return float64(infos[i].MemInUse) })
	metric("raptor_device_memory_cached_bytes", "gauge", "Device memory in the pool's cached free blocks (GPU only).", func(i int) float64 { return float64(infos[i].MemCached) })
	metric("raptor_device_memory_total_bytes", "gauge", "The device's memory (GPU only).", func(i int) float64 { return float64(infos[i].MemTotal) })
	return b
}
