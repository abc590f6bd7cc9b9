package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
)

// LogLevel is the severity of a log message; the values equal the engine's
// and the C ABI's log levels.
type LogLevel int

const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1
	LogWarn  LogLevel = 2
	LogError LogLevel = 3
)

// Config configures Open.
type Config struct {
	// Device is the CUDA device ordinal.
	Device int
	// CacheDir is the directory of the on-disk kernel cache; "" means
	// <user cache dir>/raptor/kernels, "off" keeps compiled kernels in memory
	// only.
	CacheDir string
	// Log receives the package's log messages (nil: discarded). It is called
	// from the device worker and must not call back into the Device.
	Log func(level LogLevel, msg string)
	// WorkspaceBytes is cuBLASLt's workspace (0: 32 MiB).
	WorkspaceBytes int64
	// StagingBytes is the pinned staging buffer behind Upload and Download
	// (0: 16 MiB).
	StagingBytes int64
	// GemmAutotune makes the first GEMM of each shape time cuBLASLt's top
	// heuristic candidates and keep the fastest, instead of taking the first.
	// Measured on an H100 (bench/RESULTS.md) it was no better than the
	// heuristic overall; leave it off unless a benchmark says otherwise.
	GemmAutotune bool
}

// Info describes an opened device and the libraries serving it.
type Info struct {
	Ordinal       int
	Name          string
	Major, Minor  int    // compute capability
	Arch          string // NVRTC target, e.g. "sm_90a"
	SMs           int
	TotalMem      int64
	L2Bytes       int
	MaxSmemOptin  int // bytes of shared memory a block may opt in to
	DriverVersion int // e.g. 13000 for CUDA 13.0
	NVRTCVersion  string
	CublasLtVer   int64 // cublasLtGetVersion, e.g. 130100
	DriverPath    string
	NVRTCPath     string
	CublasLtPath  string
}

func (i Info) String() string {
	return fmt.Sprintf("%s (device %d, %s, %d SMs, %s), driver %d.%d, NVRTC %s, cuBLASLt %d",
		i.Name, i.Ordinal, i.Arch, i.SMs, fmtBytes(i.TotalMem), i.DriverVersion/1000,
		(i.DriverVersion%1000)/10, i.NVRTCVersion, i.CublasLtVer)
}

// Device is one GPU, driven by a worker goroutine locked to its OS thread
// that owns the device's primary context (ARCHITECTURE.md, decision 3). All
// device work runs on that worker, through Do; the Device's methods are
// safe for concurrent use.
type Device struct {
	info Info
	log  func(LogLevel, string)

	mu     sync.RWMutex // guards closed and sends on jobs
	closed bool
	jobs   chan job
	done   chan struct{}

	failed    atomic.Pointer[error] // set once a sticky error hit the context
	workerTID atomic.Int64          // OS thread of the worker

	watch      chan watchReq // to the event waiter (waiter.go); guarded by mu like jobs
	waiterDone chan struct{}
}

type job struct {
	fn  func(*Ctx) error
	res chan error
}

// Open loads the CUDA libraries, starts the device worker, and sets up the
// device: primary context, a compute and a copy stream, the caching
// allocators, the pinned staging buffer and a cuBLASLt handle with its
// workspace. Any failure is a *status.Error with code BackendUnavailable
// whose message says what was tried (every library path, with each dlopen
// error) and what failed.
func Open(cfg Config) (*Device, error) {
	env := currentEnv()
	var errs []error
	drv, err := loadDriver(env)
	if err != nil {
		errs = append(errs, err)
	}
	nv, err := loadNVRTC(env)
	if err != nil {
		errs = append(errs, err)
	}
	lt, err := loadCublasLt(env)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0] // already a BackendUnavailable listing what was tried
	}
	if len(errs) > 1 {
		return nil, unavailable(errors.Join(errs...))
	}
	if cfg.WorkspaceBytes <= 0 {
		cfg.WorkspaceBytes = 32 << 20
	}
	if cfg.StagingBytes <= 0 {
		cfg.StagingBytes = 16 << 20
	}
	logf := cfg.Log
	if logf == nil {
		logf = func(LogLevel, string) {}
	}
	d := &Device{log: logf, jobs: make(chan job), done: make(chan struct{})}
	cache, cerr := resolveCacheDir(cfg.CacheDir)
	if cerr != nil {
		logf(LogWarn, fmt.Sprintf("cuda: kernel cache disabled: %v", cerr))
	}
	initDone := make(chan error, 1)
	go d.worker(cfg, drv, nv, lt, cache, initDone)
	if err := <-initDone; err != nil {
		return nil, unavailable(err)
	}
	logf(LogInfo, "cuda: "+d.info.String())
	return d, nil
}

// unavailable makes err a BackendUnavailable *status.Error, keeping its
// message whole.
func unavailable(err error) error {
	var se *status.Error
	if errors.As(err, &se) && se.Code == status.BackendUnavailable && se == err {
		return err
	}
	return &status.Error{Code: status.BackendUnavailable, Msg: "cuda backend unavailable", Err: err}
}

func resolveCacheDir(dir string) (diskCache, error) {
	switch dir {
	case "off":
		return diskCache{}, nil
	case "":
		base, err := os.UserCacheDir()
		if err != nil {
			return diskCache{}, err
		}
		dir = filepath.Join(base, "raptor", "kernels")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return diskCache{}, err
	}
	return diskCache{dir: dir}, nil
}

// Info describes the device.
func (d *Device) Info() Info { return d.info }

// Err returns the error that failed the device, or nil while it is healthy.
func (d *Device) Err() error {
	if p := d.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Do runs fn on the device worker with the device's context current and
// returns fn's error. Calls from many goroutines are served one at a time
// in arrival order; fn must not call Do itself (that is refused). A panic in fn is recovered into an Internal error. After
// Close, Do returns a Shutdown error; after a sticky device error (a kernel
// fault), a DeviceFailed error naming the original fault.
func (d *Device) Do(fn func(*Ctx) error) error {
	if err := d.Err(); err != nil {
		return err
	}
	if int64(syscall.Gettid()) == d.workerTID.Load() {
		// The worker would wait for itself.
		return status.Errorf(status.Internal, "cuda: Device.Do called from inside a device job")
	}
	res := make(chan error, 1)
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return status.Errorf(status.Shutdown, "cuda: device %d is closed", d.info.Ordinal)
	}
	d.jobs <- job{fn: fn, res: res}
	d.mu.RUnlock()
	return <-res
}

// Close finishes the queued work, frees every device and pinned block,
// destroys the streams, modules and cuBLASLt handle, and releases the
// primary context. Later calls of Do fail with Shutdown; Close is
// idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.done
		return nil
	}
	d.closed = true
	close(d.jobs)
	d.mu.Unlock()
	<-d.done
	return nil
}

// fail records a sticky error; the first one wins.
func (d *Device) fail(err error) error {
	wrapped := error(&status.Error{Code: status.DeviceFailed,
		Msg: fmt.Sprintf("cuda: device %d failed and cannot be used any more", d.info.Ordinal), Err: err})
	if d.failed.CompareAndSwap(nil, &wrapped) {
		d.log(LogError, wrapped.Error())
	}
	return *d.failed.Load()
}

// worker is the device's goroutine. It stays locked to its OS thread for
// its whole life and never unlocks: when it returns, the thread exits with
// it, so no other goroutine ever runs on a thread with this context current.
func (d *Device) worker(cfg Config, drv *driverAPI, nv *NVRTC, lt *cublasLtAPI, cache diskCache, initDone chan<- error) {
	runtime.LockOSThread()
	defer close(d.done)
	c, err := newCtx(d, cfg, drv, nv, lt, cache)
	if err != nil {
		initDone <- err
		// Drain (nothing can be queued: Open never returned the Device).
		return
	}
	d.info = c.info
	d.workerTID.Store(int64(c.tid))
	d.watch, d.waiterDone = make(chan watchReq), make(chan struct{})
	go d.waiter(drv, c.pctx)
	initDone <- nil
	for j := range d.jobs {
		j.res <- d.exec(c, j.fn)
	}
	close(d.watch)
	<-d.waiterDone
	c.teardown()
}

func (d *Device) exec(c *Ctx, fn func(*Ctx) error) (err error) {
	if ferr := d.Err(); ferr != nil {
		return ferr
	}
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(status.Internal, "cuda: panic in device job: %v\n%s", r, debug.Stack())
		}
		if err != nil && IsSticky(err) {
			err = d.fail(err)
		}
	}()
	return fn(c)
}

// Ctx is the device worker's state, handed to the functions given to Do. It
// must not be used outside them (nor kept after they return): every method
// assumes it runs on the worker's thread.
type Ctx struct {
	d     *Device
	info  Info
	drv   *driverAPI
	nv    *NVRTC
	lt    *cublasLtAPI
	cache diskCache
	cfg   Config
	tid   int

	dev     int32
	pctx    uintptr
	compute Stream
	copy    Stream
	upload  Stream

	mem  *pool[DevPtr]
	host *pool[unsafe.Pointer]

	staging   HostBuffer
	stageEv   [2]Event
	stageUsed [2]bool
	args      unsafe.Pointer // pinned kernel-parameter arena

	modules map[string]*module

	ltHandle  uintptr
	workspace Buffer
	plans     map[gemmKey]*gemmPlan
	planStats PlanStats

	capLock     *sync.RWMutex // the device's capture lock (capturelock.go)
	capturing   bool          // inside Capture
	sharedDepth int           // nesting of Ctx.shared
}

// DevPtr is a device address.
type DevPtr uintptr

// Add returns p advanced by off bytes.
func (p DevPtr) Add(off int64) DevPtr { return p + DevPtr(off) }

// Buffer is a device block from the caching allocator.
type Buffer struct {
	Ptr  DevPtr
	Size int64 // bytes requested (the block may be larger)
}

// HostBuffer is a pinned (page-locked) host block.
type HostBuffer struct {
	ptr  unsafe.Pointer
	Size int64
}

// Bytes returns the block as a byte slice (valid until the block is freed).
func (h HostBuffer) Bytes() []byte {
	if h.ptr == nil {
		return nil
	}
	return unsafe.Slice((*byte)(h.ptr), h.Size)
}

// Stream is a CUDA stream handle.
type Stream uintptr

// Event is a CUDA event handle.
type Event uintptr

const argArenaBytes = 8192 // kernel parameter arena: 64 pointer slots + 64 value slots of up to 64 bytes

func newCtx(d *Device, cfg Config, drv *driverAPI, nv *NVRTC, lt *cublasLtAPI, cache diskCache) (*Ctx, error) {
	c := &Ctx{d: d, drv: drv, nv: nv, lt: lt, cache: cache, cfg: cfg, tid: syscall.Gettid(),
		modules: map[string]*module{}, plans: map[gemmKey]*gemmPlan{}}
	ok := false
	defer func() {
		if !ok {
			c.teardown()
		}
	}()
	var err error
	if err := drv.check("cuInit", drv.cuInit(0)); err != nil {
		return nil, err
	}
	var ver, count, dev int32
	if err := drv.check("cuDriverGetVersion", drv.cuDriverGetVersion(&ver)); err != nil {
		return nil, err
	}
	if err := drv.check("cuDeviceGetCount", drv.cuDeviceGetCount(&count)); err != nil {
		return nil, err
	}
	if cfg.Device < 0 || cfg.Device >= int(count) {
		return nil, status.Errorf(status.BackendUnavailable, "cuda: device %d requested, %d present", cfg.Device, count)
	}
	if err := drv.check("cuDeviceGet", drv.cuDeviceGet(&dev, int32(cfg.Device))); err != nil {
		return nil, err
	}
	c.dev = dev
	name := make([]byte, 256)
	if err := drv.check("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), dev)); err != nil {
		return nil, err
	}
	attr := func(a int32) (int, error) {
		var v int32
		err := drv.check(fmt.Sprintf("cuDeviceGetAttribute(%d)", a), drv.cuDeviceGetAttribute(&v, a, dev))
		return int(v), err
	}
	info := Info{Ordinal: cfg.Device, Name: cString(unsafe.Pointer(&name[0])), DriverVersion: int(ver),
		NVRTCVersion: nv.Version(), CublasLtVer: int64(lt.cublasLtGetVersion()),
		DriverPath: drv.lib.path, NVRTCPath: nv.lib.path, CublasLtPath: lt.lib.path}
	for _, f := range []struct {
		dst  *int
		attr int32
	}{{&info.Major, attrComputeMajor}, {&info.Minor, attrComputeMinor}, {&info.SMs, attrMultiprocessorCount},
		{&info.L2Bytes, attrL2CacheSize}, {&info.MaxSmemOptin, attrMaxSharedPerBlockOptin}} {
		if *f.dst, err = attr(f.attr); err != nil {
			return nil, err
		}
	}
	var total uint64
	if err := drv.check("cuDeviceTotalMem_v2", drv.cuDeviceTotalMem(&total, dev)); err != nil {
		return nil, err
	}
	info.TotalMem = int64(total)
	info.Arch = archFor(info.Major, info.Minor)
	c.info = info
	if info.Major < 8 {
		return nil, status.Errorf(status.BackendUnavailable,
			"cuda: %s has compute capability %d.%d; raptor's kernels need 8.0 or newer", info.Name, info.Major, info.Minor)
	}
	defer c.shared()()
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(&c.pctx, dev)); err != nil {
		return nil, err
	}
	if err := drv.check("cuCtxSetCurrent", drv.cuCtxSetCurrent(c.pctx)); err != nil {
		return nil, err
	}
	for _, s := range []*Stream{&c.compute, &c.copy, &c.upload} {
		var h uintptr
		if err := drv.check("cuStreamCreate", drv.cuStreamCreate(&h, streamNonBlocking)); err != nil {
			return nil, err
		}
		*s = Stream(h)
	}
	c.mem = newPool[DevPtr](deviceRaw{c})
	c.host = newPool[unsafe.Pointer](hostRaw{c})
	args, err := c.host.alloc(argArenaBytes)
	if err != nil {
		return nil, err
	}
	c.args = args
	if c.staging, err = c.HostAlloc(cfg.StagingBytes); err != nil {
		return nil, err
	}
	for i := range c.stageEv {
		if c.stageEv[i], err = c.NewEvent(false); err != nil {
			return nil, err
		}
	}
	if err := lt.check("cublasLtCreate", lt.cublasLtCreate(&c.ltHandle)); err != nil {
		return nil, err
	}
	if c.workspace, err = c.Alloc(cfg.WorkspaceBytes); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// archFor is the NVRTC target for a compute capability: the
// architecture-specific variant (sm_90a, sm_100a, ...) from 9.0 on, so
// kernels may use every instruction of the exact chip, else sm_XY.
func archFor(major, minor int) string {
	if major >= 9 {
		return fmt.Sprintf("sm_%d%da", major, minor)
	}
	return fmt.Sprintf("sm_%d%d", major, minor)
}

// teardown releases everything the context holds; errors are ignored (the
// device may have failed).
func (c *Ctx) teardown() {
	drv := c.drv
	if c.pctx == 0 {
		return
	}
	defer c.shared()()
	// This Ctx's own streams, not the context: another Ctx of the device
	// may be capturing a graph (capturelock.go).
	for _, s := range []Stream{c.compute, c.copy, c.upload} {
		if s != 0 {
			drv.cuStreamSynchronize(uintptr(s))
		}
	}
	for _, p := range c.plans {
		p.destroy(c.lt)
	}
	c.plans = nil
	if c.ltHandle != 0 {
		c.lt.cublasLtDestroy(c.ltHandle)
		c.ltHandle = 0
	}
	for _, m := range c.modules {
		drv.cuModuleUnload(m.handle)
	}
	c.modules = nil
	for _, e := range c.stageEv {
		if e != 0 {
			drv.cuEventDestroy(uintptr(e))
		}
	}
	if c.mem != nil {
		c.mem.freeAll()
	}
	if c.host != nil {
		c.host.freeAll()
	}
	for _, s := range []Stream{c.compute, c.copy, c.upload} {
		if s != 0 {
			drv.cuStreamDestroy(uintptr(s))
		}
	}
	drv.cuDevicePrimaryCtxRelease(c.dev)
	c.pctx = 0
}

// Info describes the device.
func (c *Ctx) Info() Info { return c.info }

// ThreadID is the OS thread id of the device worker (constant for the
// device's life).
func (c *Ctx) ThreadID() int { return c.tid }

// Compute is the stream all of Ctx's operations use unless told otherwise.
func (c *Ctx) Compute() Stream { return c.compute }

// CopyStream is a second stream for transfers that overlap compute; order it
// against Compute with RecordEvent and WaitEvent.
func (c *Ctx) CopyStream() Stream { return c.copy }

// UploadStream is a third stream for host-to-device input uploads, so that
// the next batch's upload does not queue behind the previous batch's
// download on CopyStream (issue 7); order it with RecordEvent and WaitEvent.
func (c *Ctx) UploadStream() Stream { return c.upload }

// Logf logs through the device's Config.Log.
func (c *Ctx) Logf(level LogLevel, format string, args ...any) {
	c.d.log(level, fmt.Sprintf(format, args...))
}

// deviceRaw is the device pool's raw allocator.
type deviceRaw struct{ c *Ctx }

func (r deviceRaw) alloc(size int64) (DevPtr, error) {
	defer r.c.shared()()
	var p uintptr
	err := r.c.drv.check(fmt.Sprintf("cuMemAlloc_v2(%d bytes)", size), r.c.drv.cuMemAlloc(&p, uint64(size)))
	return DevPtr(p), err
}
func (r deviceRaw) free(p DevPtr) error {
	defer r.c.shared()()
	return r.c.drv.check("cuMemFree_v2", r.c.drv.cuMemFree(uintptr(p)))
}
func (r deviceRaw) memInfo() (int64, int64, error) { return r.c.MemInfo() }
func (r deviceRaw) kind() string                   { return "device" }

// hostRaw is the pinned pool's raw allocator.
type hostRaw struct{ c *Ctx }

func (r hostRaw) alloc(size int64) (unsafe.Pointer, error) {
	defer r.c.shared()()
	var p unsafe.Pointer
	rc := r.c.drv.cuMemHostAlloc(&p, uint64(size), memHostAllocPortable)
	return p, r.c.drv.check(fmt.Sprintf("cuMemHostAlloc(%d bytes)", size), rc)
}
func (r hostRaw) free(p unsafe.Pointer) error {
	defer r.c.shared()()
	return r.c.drv.check("cuMemFreeHost", r.c.drv.cuMemFreeHost(p))
}
func (r hostRaw) memInfo() (int64, int64, error) {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0, 0, err
	}
	u := int64(si.Unit)
	return int64(si.Freeram) * u, int64(si.Totalram) * u, nil
}
func (r hostRaw) kind() string { return "pinned host" }

// Alloc returns a device block of at least n bytes from the caching
// allocator (256-byte aligned). Out of memory is an OutOfMemory
// *status.Error naming the requested, free and total sizes; the device stays
// usable.
func (c *Ctx) Alloc(n int64) (Buffer, error) {
	p, err := c.mem.alloc(n)
	if err != nil {
		return Buffer{}, err
	}
	return Buffer{Ptr: p, Size: n}, nil
}

// Free returns b to the cache; freeing the zero Buffer does nothing.
func (c *Ctx) Free(b Buffer) error {
	if b.Ptr == 0 {
		return nil
	}
	return c.mem.release(b.Ptr)
}

// Trim gives every cached (free) device block back to the driver.
func (c *Ctx) Trim() error { return c.mem.trim() }

// MemStats describes the device pool.
func (c *Ctx) MemStats() MemStats { return c.mem.stats }

// ResetPeak restarts the device pool's peak at what it holds now.
func (c *Ctx) ResetPeak() { c.mem.stats.Peak = c.mem.stats.InUse + c.mem.stats.Cached }

// HostMemStats describes the pinned host pool.
func (c *Ctx) HostMemStats() MemStats { return c.host.stats }

// MemInfo returns the device's free and total memory (cuMemGetInfo).
func (c *Ctx) MemInfo() (free, total int64, err error) {
	var f, t uint64
	err = c.drv.check("cuMemGetInfo_v2", c.drv.cuMemGetInfo(&f, &t))
	return int64(f), int64(t), err
}

// HostAlloc returns a pinned host block of at least n bytes from the pinned
// caching allocator.
func (c *Ctx) HostAlloc(n int64) (HostBuffer, error) {
	p, err := c.host.alloc(n)
	if err != nil {
		return HostBuffer{}, err
	}
	return HostBuffer{ptr: p, Size: n}, nil
}

// HostFree returns h to the pinned cache.
func (c *Ctx) HostFree(h HostBuffer) error {
	if h.ptr == nil {
		return nil
	}
	return c.host.release(h.ptr)
}

// Sync waits for all work enqueued on the compute stream.
func (c *Ctx) Sync() error {
	return c.drv.check("cuStreamSynchronize", c.drv.cuStreamSynchronize(uintptr(c.compute)))
}

// SyncStream waits for all work enqueued on s.
func (c *Ctx) SyncStream(s Stream) error {
	return c.drv.check("cuStreamSynchronize", c.drv.cuStreamSynchronize(uintptr(s)))
}

// NewEvent creates an event; timing events can measure elapsed time.
func (c *Ctx) NewEvent(timing bool) (Event, error) {
	var e uintptr
	flags := uint32(eventDisableTiming)
	if timing {
		flags = 0
	}
	err := c.drv.check("cuEventCreate", c.drv.cuEventCreate(&e, flags))
	return Event(e), err
}

// DestroyEvent destroys e.
func (c *Ctx) DestroyEvent(e Event) error {
	return c.drv.check("cuEventDestroy_v2", c.drv.cuEventDestroy(uintptr(e)))
}

// RecordEvent records e on stream s.
func (c *Ctx) RecordEvent(e Event, s Stream) error {
	return c.drv.check("cuEventRecord", c.drv.cuEventRecord(uintptr(e), uintptr(s)))
}

// WaitEvent makes later work on s wait for e.
func (c *Ctx) WaitEvent(s Stream, e Event) error {
	return c.drv.check("cuStreamWaitEvent", c.drv.cuStreamWaitEvent(uintptr(s), uintptr(e), 0))
}

// EventSync waits for e.
func (c *Ctx) EventSync(e Event) error {
	return c.drv.check("cuEventSynchronize", c.drv.cuEventSynchronize(uintptr(e)))
}

// EventDone reports whether the work before e has completed (cuEventQuery;
// CUDA_ERROR_NOT_READY is false, not an error). It never blocks.
func (c *Ctx) EventDone(e Event) (bool, error) {
	rc := c.drv.cuEventQuery(uintptr(e))
	if rc == 600 { // CUDA_ERROR_NOT_READY
		return false, nil
	}
	return rc == 0, c.drv.check("cuEventQuery", rc)
}

// Elapsed returns the milliseconds between two completed timing events.
func (c *Ctx) Elapsed(start, end Event) (float32, error) {
	return c.drv.elapsed(uintptr(start), uintptr(end))
}

// Memset8 sets n bytes at dst to v, on the compute stream.
func (c *Ctx) Memset8(dst DevPtr, v byte, n int64) error {
	return c.drv.check("cuMemsetD8Async", c.drv.cuMemsetD8Async(uintptr(dst), v, uint64(n), uintptr(c.compute)))
}

// Memset32 sets n 32-bit words at dst to v, on the compute stream.
func (c *Ctx) Memset32(dst DevPtr, v uint32, n int64) error {
	return c.drv.check("cuMemsetD32Async", c.drv.cuMemsetD32Async(uintptr(dst), v, uint64(n), uintptr(c.compute)))
}

// CopyDtoD copies n bytes between device buffers, on the compute stream.
func (c *Ctx) CopyDtoD(dst, src DevPtr, n int64) error {
	return c.drv.check("cuMemcpyDtoDAsync_v2", c.drv.cuMemcpyDtoDAsync(uintptr(dst), uintptr(src), uint64(n), uintptr(c.compute)))
}

// CopyHtoDAsync enqueues a copy of n bytes from pinned src (at offset off)
// to dst on stream s. src must stay untouched until the copy completes.
func (c *Ctx) CopyHtoDAsync(dst DevPtr, src HostBuffer, off, n int64, s Stream) error {
	if off < 0 || n < 0 || off+n > src.Size {
		return status.Errorf(status.InvalidArgument, "cuda: copy of [%d, %d) from a %d-byte pinned buffer", off, off+n, src.Size)
	}
	return c.drv.check("cuMemcpyHtoDAsync_v2", c.drv.cuMemcpyHtoDAsync(uintptr(dst), unsafe.Add(src.ptr, off), uint64(n), uintptr(s)))
}

// CopyDtoHAsync enqueues a copy of n bytes from src to pinned dst (at
// offset off) on stream s; dst holds the data once s reaches that point.
func (c *Ctx) CopyDtoHAsync(dst HostBuffer, off int64, src DevPtr, n int64, s Stream) error {
	if off < 0 || n < 0 || off+n > dst.Size {
		return status.Errorf(status.InvalidArgument, "cuda: copy of [%d, %d) into a %d-byte pinned buffer", off, off+n, dst.Size)
	}
	return c.drv.check("cuMemcpyDtoHAsync_v2", c.drv.cuMemcpyDtoHAsync(unsafe.Add(dst.ptr, off), uintptr(src), uint64(n), uintptr(s)))
}

// Upload copies src to device address dst through the pinned staging
// buffer, on the compute stream: ordered after the work already enqueued
// there and before the work enqueued later. It returns once src may be
// reused; it does not wait for the copy to land.
func (c *Ctx) Upload(dst DevPtr, src []byte) error {
	half := c.staging.Size / 2
	buf := c.staging.Bytes()
	for off, i := int64(0), 0; off < int64(len(src)); i ^= 1 {
		n := min(half, int64(len(src))-off)
		if c.stageUsed[i] {
			if err := c.EventSync(c.stageEv[i]); err != nil {
				return err
			}
		}
		copy(buf[int64(i)*half:], src[off:off+n])
		if err := c.CopyHtoDAsync(dst.Add(off), c.staging, int64(i)*half, n, c.compute); err != nil {
			return err
		}
		if err := c.RecordEvent(c.stageEv[i], c.compute); err != nil {
			return err
		}
		c.stageUsed[i] = true
		off += n
	}
	return nil
}

// Download copies len(dst) bytes from device address src into dst through
// the pinned staging buffer, on the compute stream, after all work enqueued
// there, and returns once dst holds them.
func (c *Ctx) Download(dst []byte, src DevPtr) error {
	half := c.staging.Size / 2
	buf := c.staging.Bytes()
	type pending struct{ off, n int64 }
	var prev *pending
	flush := func(i int, p *pending) error {
		if err := c.EventSync(c.stageEv[i]); err != nil {
			return err
		}
		copy(dst[p.off:p.off+p.n], buf[int64(i)*half:int64(i)*half+p.n])
		return nil
	}
	i := 0
	for off := int64(0); off < int64(len(dst)); i ^= 1 {
		n := min(half, int64(len(dst))-off)
		if c.stageUsed[i] {
			// An upload may still be reading this half.
			if err := c.EventSync(c.stageEv[i]); err != nil {
				return err
			}
		}
		if err := c.CopyDtoHAsync(c.staging, int64(i)*half, src.Add(off), n, c.compute); err != nil {
			return err
		}
		if err := c.RecordEvent(c.stageEv[i], c.compute); err != nil {
			return err
		}
		c.stageUsed[i] = true
		if prev != nil {
			if err := flush(i^1, prev); err != nil {
				return err
			}
		}
		prev = &pending{off, n}
		off += n
	}
	if prev != nil {
		return flush(i^1, prev)
	}
	return nil
}

// UploadSlice copies a slice of plain values (numbers) to dst; see Upload.
func UploadSlice[T any](c *Ctx, dst DevPtr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	var z T
	return c.Upload(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), len(src)*int(unsafe.Sizeof(z))))
}

// DownloadSlice fills a slice of plain values (numbers) from src; see
// Download.
func DownloadSlice[T any](c *Ctx, dst []T, src DevPtr) error {
	if len(dst) == 0 {
		return nil
	}
	var z T
	return c.Download(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), len(dst)*int(unsafe.Sizeof(z))), src)
}

// Graph is an instantiated CUDA graph captured from the compute stream.
type Graph struct {
	exec, graph uintptr
}

// Capture records the work fn enqueues on the compute stream into a CUDA
// graph instead of running it (relaxed capture mode). Replaying the graph
// with LaunchGraph runs the same kernels on the same buffers with one
// launch. Buffers fn allocates must come from a warm pool: capture does not
// capture allocations.
func (c *Ctx) Capture(fn func() error) (*Graph, error) {
	l := c.captureLock()
	l.Lock()
	c.capturing = true
	ended := true
	defer func() {
		if !ended { // fn panicked: leave the stream out of capture mode
			var g uintptr
			c.drv.cuStreamEndCapture(uintptr(c.compute), &g)
			if g != 0 {
				c.drv.cuGraphDestroy(g)
			}
		}
		c.capturing = false
		l.Unlock()
	}()
	if err := c.drv.check("cuStreamBeginCapture_v2", c.drv.cuStreamBeginCapture(uintptr(c.compute), captureModeRelaxed)); err != nil {
		return nil, err
	}
	ended = false
	ferr := fn()
	var g uintptr
	ended = true
	eerr := c.drv.check("cuStreamEndCapture", c.drv.cuStreamEndCapture(uintptr(c.compute), &g))
	if ferr != nil || eerr != nil {
		if g != 0 {
			c.drv.cuGraphDestroy(g)
		}
		return nil, errors.Join(ferr, eerr)
	}
	var exec uintptr
	if err := c.drv.check("cuGraphInstantiateWithFlags", c.drv.cuGraphInstantiateWithFlags(&exec, g, 0)); err != nil {
		c.drv.cuGraphDestroy(g)
		return nil, err
	}
	return &Graph{exec: exec, graph: g}, nil
}

// LaunchGraph replays g on the compute stream.
func (c *Ctx) LaunchGraph(g *Graph) error {
	return c.drv.check("cuGraphLaunch", c.drv.cuGraphLaunch(g.exec, uintptr(c.compute)))
}

// GraphNodes is the number of nodes (kernels, memsets, ...) in g, or -1
// when the driver cannot say.
func (c *Ctx) GraphNodes(g *Graph) int {
	if c.drv.cuGraphGetNodes == nil {
		return -1
	}
	var n uint64
	if c.drv.cuGraphGetNodes(g.graph, nil, &n) != 0 {
		return -1
	}
	return int(n)
}

// DestroyGraph frees g.
func (c *Ctx) DestroyGraph(g *Graph) {
	defer c.shared()()
	if g.exec != 0 {
		c.drv.cuGraphExecDestroy(g.exec)
	}
	if g.graph != 0 {
		c.drv.cuGraphDestroy(g.graph)
	}
	*g = Graph{}
}
