package main

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// Several devices in one engine (issue 10): the appended fields of
// raptor_engine_options_t, raptor_engine_options_init,
// raptor_engine_device_count and raptor_engine_get_device_stats.

var (
	_ = [1]struct{}{}[C.RAPTOR_MAX_DEVICES-engine.MaxDevices]
	_ = [1]struct{}{}[C.RAPTOR_ENGINE_OPTIONS_V1_SIZE-unsafe.Offsetof(C.raptor_engine_options_t{}.devices)]
)

//export raptorgo_engine_options_init
func raptorgo_engine_options_init(o *C.raptor_engine_options_t, size C.size_t) {
	defer guard("raptor_engine_options_init", nil)()
	if o == nil || (size != C.RAPTOR_ENGINE_OPTIONS_V1_SIZE && size != C.sizeof_raptor_engine_options_t) {
		return
	}
	fillEngineOptions(o, size)
}

// deviceOptions reads the appended device selection of a current-size
// options struct.
func deviceOptions(o *C.raptor_engine_options_t, opts *engine.Options) error {
	switch {
	case o.devices == nil && o.num_devices != 0:
		return status.Errorf(status.InvalidArgument, "devices is NULL but num_devices is %d", uint64(o.num_devices))
	case o.devices != nil && o.num_devices == 0:
		return status.Errorf(status.InvalidArgument, "the device list is empty (num_devices 0); set devices NULL for the one `device`")
	case o.num_devices > C.RAPTOR_MAX_DEVICES:
		return status.Errorf(status.OutOfRange, "num_devices %d exceeds RAPTOR_MAX_DEVICES (%d)", uint64(o.num_devices), C.RAPTOR_MAX_DEVICES)
	case o.devices != nil && o.all_devices != 0:
		return status.Errorf(status.InvalidArgument, "both a device list and all_devices were set; pick one")
	}
	if o.devices != nil {
		list := unsafe.Slice((*C.int32_t)(unsafe.Pointer(o.devices)), int(o.num_devices))
		opts.Devices = make([]int, len(list))
		for i, d := range list {
			opts.Devices[i] = int(d)
		}
	}
	opts.AllDevices = o.all_devices != 0
	return nil
}

//export raptorgo_engine_device_count
func raptorgo_engine_device_count(h C.uintptr_t, n *C.int32_t) (st C.raptor_status_t) {
	const name = "raptor_engine_device_count"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	if n == nil {
		return failf(name, status.InvalidArgument, "n is NULL")
	}
	*n = C.int32_t(e.eng.NumDevices())
	return C.RAPTOR_OK
}

//export raptorgo_engine_get_device_stats
func raptorgo_engine_get_device_stats(h C.uintptr_t, index C.int32_t, s *C.raptor_device_stats_t) (st C.raptor_status_t) {
	const name = "raptor_engine_get_device_stats"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	if s == nil {
		return failf(name, status.InvalidArgument, "stats is NULL")
	}
	if err := checkSize("raptor_device_stats_t", s.struct_size, C.sizeof_raptor_device_stats_t); err != nil {
		return fail(name, err)
	}
	n := e.eng.NumDevices()
	if index < 0 || int(index) >= n {
		return failf(name, status.OutOfRange, "device index %d outside [0, %d)", index, n)
	}
	info := e.eng.Devices()[index]
	ds := e.async.DeviceStats()[index]
	failed := C.int32_t(0)
	if info.Failed != nil || ds.Failed {
		failed = 1
	}
	*s = C.raptor_device_stats_t{
		struct_size:         C.sizeof_raptor_device_stats_t,
		index:               index,
		ordinal:             C.int32_t(info.Ordinal),
		failed:              failed,
		busy_lanes:          C.int32_t(ds.BusyLanes),
		batches:             C.uint64_t(ds.Batches),
		requests:            C.uint64_t(ds.Requests),
		tokens:              C.uint64_t(ds.Tokens),
		requeued:            C.uint64_t(ds.Requeued),
		failed_in_flight:    C.uint64_t(ds.FailedInFlight),
		outstanding_cost:    C.double(ds.Outstanding),
		weight_bytes:        C.int64_t(info.WeightBytes),
		memory_in_use_bytes: C.int64_t(info.MemInUse),
		memory_cached_bytes: C.int64_t(info.MemCached),
		memory_total_bytes:  C.int64_t(info.MemTotal),
	}
	return C.RAPTOR_OK
}
