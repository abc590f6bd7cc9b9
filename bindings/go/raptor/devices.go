package raptor

import (
	"sync"
	"unsafe"
)

// devFuncs are the functions of several devices appended to the ABI; a
// library that predates them answers StatusUnsupported.
type devFuncs struct {
	once           sync.Once
	err            error
	deviceCount    func(uintptr, *int32) int32
	getDeviceStats func(uintptr, int32, *cDeviceStats) int32
}

func (l *Library) devices() (*devFuncs, error) {
	l.df.once.Do(func() {
		l.df.err = l.registerAppended("several devices", []symbol{
			{&l.df.deviceCount, "raptor_engine_device_count"},
			{&l.df.getDeviceStats, "raptor_engine_get_device_stats"},
		})
	})
	return &l.df, l.df.err
}

// DeviceStats are one device's statistics (raptor_device_stats_t).
type DeviceStats struct {
	Index, Ordinal int
	Failed         bool // the device failed: it takes no more work
	BusyLanes      int  // batches computing on it now
	Batches        uint64
	Requests       uint64
	Tokens         uint64
	Requeued       uint64  // requests moved to other devices when it failed
	FailedInFlight uint64  // requests computing on it when it failed
	Outstanding    float64 // cost of the batches on its lanes now
	WeightBytes    int64   // the live models' weights on it (one copy per model)
	// Device memory (GPU only; 0 on the CPU): the pool's live and cached
	// blocks, and the device's total.
	MemoryInUse, MemoryCached, MemoryTotal int64
}

// NumDevices is how many devices the engine serves on.
func (e *Engine) NumDevices() (int, error) {
	df, err := e.lib.devices()
	if err != nil {
		return 0, err
	}
	h, err := e.handle()
	if err != nil {
		return 0, err
	}
	var n int32
	if err := e.lib.call(func() int32 { return df.deviceCount(h, &n) }); err != nil {
		return 0, err
	}
	return int(n), nil
}

// DeviceStats returns the statistics of every device of the engine.
func (e *Engine) DeviceStats() ([]DeviceStats, error) {
	n, err := e.NumDevices()
	if err != nil {
		return nil, err
	}
	h, err := e.handle()
	if err != nil {
		return nil, err
	}
	out := make([]DeviceStats, n)
	for i := range out {
		c := cDeviceStats{StructSize: unsafe.Sizeof(cDeviceStats{})}
		if err := e.lib.call(func() int32 { return e.lib.df.getDeviceStats(h, int32(i), &c) }); err != nil {
			return nil, err
		}
		out[i] = DeviceStats{Index: int(c.Index), Ordinal: int(c.Ordinal), Failed: c.Failed != 0, BusyLanes: int(c.BusyLanes),
			Batches: c.Batches, Requests: c.Requests, Tokens: c.Tokens, Requeued: c.Requeued, FailedInFlight: c.FailedInFlight,
			Outstanding: c.OutstandingCost, WeightBytes: c.WeightBytes,
			MemoryInUse: c.MemoryInUse, MemoryCached: c.MemoryCached, MemoryTotal: c.MemoryTotal}
	}
	return out, nil
}
