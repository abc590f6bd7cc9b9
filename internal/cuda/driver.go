package cuda

import (
	"fmt"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
)

// driverAPI holds the CUDA driver entry points raptor uses, bound with purego
// from libcuda.so.1. Where cuda.h maps a name onto a versioned symbol (for
// example cuMemAlloc onto cuMemAlloc_v2), the versioned symbol is bound
// (ARCHITECTURE.md, decision 1).
type driverAPI struct {
	lib *library

	cuGetErrorName   func(code int32, str *unsafe.Pointer) int32
	cuGetErrorString func(code int32, str *unsafe.Pointer) int32

	cuInit               func(flags uint32) int32
	cuDriverGetVersion   func(v *int32) int32
	cuDeviceGetCount     func(n *int32) int32
	cuDeviceGet          func(dev *int32, ordinal int32) int32
	cuDeviceGetName      func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute func(v *int32, attr int32, dev int32) int32
	cuDeviceTotalMem     func(bytes *uint64, dev int32) int32

	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuCtxSynchronize          func() int32

	cuStreamCreate      func(s *uintptr, flags uint32) int32
	cuStreamDestroy     func(s uintptr) int32
	cuStreamSynchronize func(s uintptr) int32
	cuStreamWaitEvent   func(s, ev uintptr, flags uint32) int32

	cuEventCreate        func(ev *uintptr, flags uint32) int32
	cuEventDestroy       func(ev uintptr) int32
	cuEventRecord        func(ev, s uintptr) int32
	cuEventSynchronize   func(ev uintptr) int32
	cuEventQuery         func(ev uintptr) int32
	cuEventElapsedTime   func(ms *float32, start, end uintptr) int32
	cuEventElapsedTimeV2 func(ms *float32, start, end uintptr) int32

	cuMemAlloc                                  func(p *uintptr, size uint64) int32
	cuMemFree                                   func(p uintptr) int32
	cuMemGetInfo                                func(free, total *uint64) int32
	cuMemHostAlloc                              func(p *unsafe.Pointer, size uint64, flags uint32) int32
	cuMemFreeHost                               func(p unsafe.Pointer) int32
	cuMemcpyHtoDAsync                           func(dst uintptr, src unsafe.Pointer, n uint64, s uintptr) int32
	cuMemcpyDtoHAsync                           func(dst unsafe.Pointer, src uintptr, n uint64, s uintptr) int32
	cuMemcpyDtoDAsync                           func(dst, src uintptr, n uint64, s uintptr) int32
	cuMemsetD8Async                             func(dst uintptr, v uint8, n uint64, s uintptr) int32
	cuMemsetD32Async                            func(dst uintptr, v uint32, n uint64, s uintptr) int32
	cuModuleLoadData                            func(mod *uintptr, image unsafe.Pointer) int32
	cuModuleUnload                              func(mod uintptr) int32
	cuModuleGetFunc                             func(fn *uintptr, mod uintptr, name string) int32
	cuFuncGetAttribute                          func(v *int32, attr int32, fn uintptr) int32
	cuFuncSetAttribute                          func(fn uintptr, attr int32, v int32) int32
	cuLaunchKernel                              func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params unsafe.Pointer, extra unsafe.Pointer) int32
	cuOccupancyMaxActiveBlocksPerMultiprocessor func(n *int32, fn uintptr, block int32, smem uint64) int32

	cuStreamBeginCapture        func(s uintptr, mode int32) int32
	cuStreamEndCapture          func(s uintptr, graph *uintptr) int32
	cuGraphInstantiateWithFlags func(exec *uintptr, graph uintptr, flags uint64) int32
	cuGraphLaunch               func(exec, s uintptr) int32
	cuGraphExecDestroy          func(exec uintptr) int32
	cuGraphDestroy              func(graph uintptr) int32
	cuGraphGetNodes             func(graph uintptr, nodes unsafe.Pointer, n *uint64) int32
}

func (a *driverAPI) symbols() []symbol {
	return []symbol{
		{name: "cuGetErrorName", fn: &a.cuGetErrorName},
		{name: "cuGetErrorString", fn: &a.cuGetErrorString},
		{name: "cuInit", fn: &a.cuInit},
		{name: "cuDriverGetVersion", fn: &a.cuDriverGetVersion},
		{name: "cuDeviceGetCount", fn: &a.cuDeviceGetCount},
		{name: "cuDeviceGet", fn: &a.cuDeviceGet},
		{name: "cuDeviceGetName", fn: &a.cuDeviceGetName},
		{name: "cuDeviceGetAttribute", fn: &a.cuDeviceGetAttribute},
		{name: "cuDeviceTotalMem_v2", fn: &a.cuDeviceTotalMem},
		{name: "cuDevicePrimaryCtxRetain", fn: &a.cuDevicePrimaryCtxRetain},
		{name: "cuDevicePrimaryCtxRelease_v2", fn: &a.cuDevicePrimaryCtxRelease},
		{name: "cuCtxSetCurrent", fn: &a.cuCtxSetCurrent},
		{name: "cuCtxSynchronize", fn: &a.cuCtxSynchronize},
		{name: "cuStreamCreate", fn: &a.cuStreamCreate},
		{name: "cuStreamDestroy_v2", fn: &a.cuStreamDestroy},
		{name: "cuStreamSynchronize", fn: &a.cuStreamSynchronize},
		{name: "cuStreamWaitEvent", fn: &a.cuStreamWaitEvent},
		{name: "cuEventCreate", fn: &a.cuEventCreate},
		{name: "cuEventDestroy_v2", fn: &a.cuEventDestroy},
		{name: "cuEventRecord", fn: &a.cuEventRecord},
		{name: "cuEventSynchronize", fn: &a.cuEventSynchronize},
		{name: "cuEventQuery", fn: &a.cuEventQuery},
		{name: "cuEventElapsedTime", fn: &a.cuEventElapsedTime, optional: true},
		{name: "cuEventElapsedTime_v2", fn: &a.cuEventElapsedTimeV2, optional: true},
		{name: "cuMemAlloc_v2", fn: &a.cuMemAlloc},
		{name: "cuMemFree_v2", fn: &a.cuMemFree},
		{name: "cuMemGetInfo_v2", fn: &a.cuMemGetInfo},
		{name: "cuMemHostAlloc", fn: &a.cuMemHostAlloc},
		{name: "cuMemFreeHost", fn: &a.cuMemFreeHost},
		{name: "cuMemcpyHtoDAsync_v2", fn: &a.cuMemcpyHtoDAsync},
		{name: "cuMemcpyDtoHAsync_v2", fn: &a.cuMemcpyDtoHAsync},
		{name: "cuMemcpyDtoDAsync_v2", fn: &a.cuMemcpyDtoDAsync},
		{name: "cuMemsetD8Async", fn: &a.cuMemsetD8Async},
		{name: "cuMemsetD32Async", fn: &a.cuMemsetD32Async},
		{name: "cuModuleLoadData", fn: &a.cuModuleLoadData},
		{name: "cuModuleUnload", fn: &a.cuModuleUnload},
		{name: "cuModuleGetFunction", fn: &a.cuModuleGetFunc},
		{name: "cuFuncGetAttribute", fn: &a.cuFuncGetAttribute},
		{name: "cuFuncSetAttribute", fn: &a.cuFuncSetAttribute},
		{name: "cuLaunchKernel", fn: &a.cuLaunchKernel},
		{name: "cuOccupancyMaxActiveBlocksPerMultiprocessor", fn: &a.cuOccupancyMaxActiveBlocksPerMultiprocessor},
		{name: "cuStreamBeginCapture_v2", fn: &a.cuStreamBeginCapture},
		{name: "cuStreamEndCapture", fn: &a.cuStreamEndCapture},
		{name: "cuGraphInstantiateWithFlags", fn: &a.cuGraphInstantiateWithFlags},
		{name: "cuGraphLaunch", fn: &a.cuGraphLaunch},
		{name: "cuGraphExecDestroy", fn: &a.cuGraphExecDestroy},
		{name: "cuGraphDestroy", fn: &a.cuGraphDestroy},
		{name: "cuGraphGetNodes", fn: &a.cuGraphGetNodes, optional: true},
	}
}

// loadDriver opens and binds libcuda.
func loadDriver(env discoveryEnv) (*driverAPI, error) {
	lib, err := env.load(specCUDA)
	if err != nil {
		return nil, err
	}
	a := &driverAPI{lib: lib}
	if err := bind(lib, a.symbols()); err != nil {
		return nil, err
	}
	if a.cuEventElapsedTime == nil && a.cuEventElapsedTimeV2 == nil {
		return nil, status.Errorf(status.BackendUnavailable, "cuda: %s has neither cuEventElapsedTime nor cuEventElapsedTime_v2", lib.path)
	}
	return a, nil
}

// cString copies a NUL-terminated C string (at most 4096 bytes).
func cString(p unsafe.Pointer) string {
	if p == nil {
		return ""
	}
	n := 0
	for n < 4096 && *(*byte)(unsafe.Add(p, n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(p), n))
}

// callError describes driver result rc of call.
func (a *driverAPI) callError(call string, rc int32) *CallError {
	ce := &CallError{Lib: "driver", Call: call, Code: int(rc), Name: fmt.Sprintf("CUresult(%d)", rc)}
	var p unsafe.Pointer
	if a.cuGetErrorName(rc, &p) == 0 && p != nil {
		ce.Name = cString(p)
	}
	p = nil
	if a.cuGetErrorString(rc, &p) == 0 && p != nil {
		ce.Desc = cString(p)
	}
	return ce
}

// check turns a driver result into nil or a *status.Error whose code follows
// driverStatus and whose cause is a *CallError naming call.
func (a *driverAPI) check(call string, rc int32) error {
	if rc == 0 {
		return nil
	}
	return callFailed(driverStatus(int(rc)), a.callError(call, rc))
}

// elapsed returns the milliseconds between two recorded events.
func (a *driverAPI) elapsed(start, end uintptr) (float32, error) {
	var ms float32
	if a.cuEventElapsedTimeV2 != nil {
		return ms, a.check("cuEventElapsedTime_v2", a.cuEventElapsedTimeV2(&ms, start, end))
	}
	return ms, a.check("cuEventElapsedTime", a.cuEventElapsedTime(&ms, start, end))
}

// Device attributes (CUdevice_attribute).
const (
	attrMaxThreadsPerBlock     = 1
	attrMaxSharedPerBlock      = 8
	attrClockRate              = 13
	attrMultiprocessorCount    = 16
	attrL2CacheSize            = 38
	attrComputeMajor           = 75
	attrComputeMinor           = 76
	attrMaxSharedPerBlockOptin = 97
)

// Function attributes (CUfunction_attribute).
const (
	funcAttrMaxThreads = 0
	funcAttrSharedSize = 1
	funcAttrLocalSize  = 3
	funcAttrNumRegs    = 4
	funcAttrMaxDynSmem = 8
)

const (
	streamNonBlocking      = 1 // CU_STREAM_NON_BLOCKING
	eventDisableTiming     = 2 // CU_EVENT_DISABLE_TIMING
	captureModeRelaxed     = 2 // CU_STREAM_CAPTURE_MODE_RELAXED
	memHostAllocPortable   = 1 // CU_MEMHOSTALLOC_PORTABLE
	errCodeNotPermittedCap = 900
)
