package cuda

import (
	"fmt"
	"math"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/kernels"
)

// CompileOptions are the NVRTC options every kernel module is compiled with
// (beside --gpu-architecture). They are part of the kernel cache key.
var CompileOptions = []string{"--std=c++17", "--device-as-default-execution-space"}

// module is a loaded kernel module.
type module struct {
	name    string
	handle  uintptr
	outcome cacheOutcome
	funcs   map[string]*Function
}

// Function is a kernel of a loaded module.
type Function struct {
	Module, Name string
	handle       uintptr
	Registers    int // per thread
	LocalBytes   int // local memory (stack, spills) per thread
	MaxThreads   int // largest block it can be launched with
	grid         int // persistent grid of an attention kernel, once sized
}

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z uint32 }

// D1 is the 1-D shape {x, 1, 1}.
func D1(x int) Dim3 { return Dim3{uint32(x), 1, 1} }

// loadModule compiles (or takes from the cache) and loads the embedded
// module name for this device's architecture.
func (c *Ctx) loadModule(name string) (*module, error) {
	if m := c.modules[name]; m != nil {
		return m, nil
	}
	km, ok := kernels.Lookup(name)
	if !ok {
		return nil, status.Errorf(status.Internal, "cuda: no kernel module %q", name)
	}
	src, err := kernels.Expand(km)
	if err != nil {
		return nil, status.Wrap(status.Internal, err, "cuda")
	}
	arch := c.info.Arch
	key := makeCacheKey(km.Name, src, CompileOptions, c.nv.Version(), arch)
	what := fmt.Sprintf("module %s (%s)", km.File, arch)
	logf := func(f string, a ...any) { c.Logf(LogWarn, f, a...) }
	compile := func() ([]byte, error) {
		t0 := time.Now()
		cubin, _, err := c.nv.Compile(km.File, src, arch, CompileOptions)
		if err == nil {
			c.Logf(LogDebug, "cuda: compiled %s with NVRTC %s in %v", what, c.nv.Version(), time.Since(t0).Round(time.Millisecond))
		}
		return cubin, err
	}
	cubin, outcome, err := cachedCompile(c.cache, key, what, logf, compile)
	if err != nil {
		return nil, err
	}
	var h uintptr
	loadData := func() int32 { // under the capture lock; the NVRTC compile is not
		defer c.shared()()
		return c.drv.cuModuleLoadData(&h, unsafe.Pointer(&cubin[0]))
	}
	rc := loadData()
	if rc != 0 && outcome == fromDisk {
		// A well-formed entry the driver rejects (written by a broken build,
		// say): drop it and compile afresh.
		c.Logf(LogWarn, "cuda: cached cubin for %s rejected by the driver (%v); recompiling", what, c.drv.callError("cuModuleLoadData", rc))
		c.cache.remove(key)
		if cubin, err = compile(); err != nil {
			return nil, err
		}
		if err := c.cache.put(key, cubin); err != nil {
			c.Logf(LogWarn, "cuda: cannot write kernel cache entry for %s: %v", what, err)
		}
		outcome = fromRecovery
		rc = loadData()
	}
	if err := c.drv.check("cuModuleLoadData("+what+")", rc); err != nil {
		return nil, err
	}
	c.Logf(LogDebug, "cuda: loaded %s from %s", what, outcome)
	m := &module{name: name, handle: h, outcome: outcome, funcs: map[string]*Function{}}
	c.modules[name] = m
	return m, nil
}

// ModuleOutcome says how module name was obtained when it was loaded:
// "disk cache", "compiled" or "recompiled (corrupt cache entry)"; "" if it
// is not loaded.
func (c *Ctx) ModuleOutcome(name string) string {
	if m := c.modules[name]; m != nil {
		return string(m.outcome)
	}
	return ""
}

// Function returns kernel name of the embedded module (kernels/<module>.cu),
// compiling and loading the module at first use.
func (c *Ctx) Function(moduleName, name string) (*Function, error) {
	m, err := c.loadModule(moduleName)
	if err != nil {
		return nil, err
	}
	if f := m.funcs[name]; f != nil {
		return f, nil
	}
	var h uintptr
	if err := c.drv.check(fmt.Sprintf("cuModuleGetFunction(%s, %s)", moduleName, name), c.drv.cuModuleGetFunc(&h, m.handle, name)); err != nil {
		return nil, err
	}
	f := &Function{Module: moduleName, Name: name, handle: h}
	for _, a := range []struct {
		dst  *int
		attr int32
	}{{&f.Registers, funcAttrNumRegs}, {&f.LocalBytes, funcAttrLocalSize}, {&f.MaxThreads, funcAttrMaxThreads}} {
		var v int32
		if err := c.drv.check("cuFuncGetAttribute", c.drv.cuFuncGetAttribute(&v, a.attr, h)); err != nil {
			return nil, err
		}
		*a.dst = int(v)
	}
	m.funcs[name] = f
	return f, nil
}

// Occupancy returns how many blocks of the given size fit on one SM.
func (c *Ctx) Occupancy(f *Function, block int, smem int) (int, error) {
	var n int32
	err := c.drv.check("cuOccupancyMaxActiveBlocksPerMultiprocessor",
		c.drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, f.handle, int32(block), uint64(smem)))
	return int(n), err
}

// RawArg is a kernel parameter passed by value as raw bytes: a struct
// parameter (e.g. kernels/sparse_attention.cuh's AttnParams), laid out by
// the caller exactly as the kernel declares it. All RawArgs of one launch
// together hold at most rawArgBytes bytes.
type RawArg []byte

// rawArgBase is where RawArg values start in the parameter arena (after the
// 64 pointer slots and 64 8-byte value slots); rawArgBytes is their room.
const (
	rawArgBase  = 1024
	rawArgBytes = argArenaBytes - rawArgBase
)

// Launch enqueues f on stream s. Each argument becomes one kernel
// parameter: DevPtr, Buffer (its Ptr), int32, uint32, int64, uint64,
// float32, float64, bool or RawArg (a by-value struct); nil is a null
// pointer. Plain int is refused: say which width the kernel takes.
func (c *Ctx) Launch(f *Function, grid, block Dim3, smem uint32, s Stream, args ...any) error {
	const maxArgs = 64
	if len(args) > maxArgs {
		return status.Errorf(status.Internal, "cuda: %s launched with %d arguments (at most %d)", f.Name, len(args), maxArgs)
	}
	if grid.X == 0 || grid.Y == 0 || grid.Z == 0 {
		return nil // nothing to do
	}
	// The arena is pinned host memory: slot i of the pointer table (bytes
	// [8i, 8i+8)) points at value slot i (bytes [512+8i, 512+8i+8)). The
	// driver copies the values during cuLaunchKernel, so the arena is free
	// again as soon as the call returns.
	base := c.args
	raw := rawArgBase
	for i, a := range args {
		v := unsafe.Add(base, 512+8*i)
		switch x := a.(type) {
		case RawArg:
			if raw+len(x) > argArenaBytes {
				return status.Errorf(status.Internal, "cuda: %s: by-value arguments exceed %d bytes", f.Name, rawArgBytes)
			}
			v = unsafe.Add(base, raw)
			copy(unsafe.Slice((*byte)(v), len(x)), x)
			raw += (len(x) + 15) &^ 15
		case nil:
			*(*uint64)(v) = 0
		case DevPtr:
			*(*uint64)(v) = uint64(x)
		case Buffer:
			*(*uint64)(v) = uint64(x.Ptr)
		case int32:
			*(*int32)(v) = x
		case uint32:
			*(*uint32)(v) = x
		case int64:
			*(*int64)(v) = x
		case uint64:
			*(*uint64)(v) = x
		case float32:
			*(*uint32)(v) = math.Float32bits(x)
		case float64:
			*(*uint64)(v) = math.Float64bits(x)
		case bool:
			var b byte
			if x {
				b = 1
			}
			*(*byte)(v) = b
		default:
			return status.Errorf(status.Internal, "cuda: %s argument %d has unsupported type %T", f.Name, i, a)
		}
		*(*unsafe.Pointer)(unsafe.Add(base, 8*i)) = v
	}
	var params unsafe.Pointer
	if len(args) > 0 {
		params = base
	}
	rc := c.drv.cuLaunchKernel(f.handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, smem, uintptr(s), params, nil)
	if rc != 0 {
		return c.drv.check(fmt.Sprintf("cuLaunchKernel(%s, grid %v, block %v)", f.Name, grid, block), rc)
	}
	return nil
}
