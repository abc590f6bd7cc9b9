package engine

// Several devices in one engine (issue 10). An engine opens one backend per
// selected device (Options.Devices, Options.AllDevices); each model loads
// its weights once per device. Synchronous encodes go to the healthy
// device with the least outstanding work; Async gives every device its own
// lanes and sends each batch to the least loaded healthy device. A device
// whose backend reports a sticky fault (status.DeviceFailed) is failed for
// good: new work goes to the others, and when every device failed every
// call answers status.DeviceFailed.

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/cpu"
	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/status"
)

// MaxDevices bounds the device list of an engine (and the ordinals of CPU
// replicas).
const MaxDevices = 64

// device is one device of an engine: its backend and its health.
type device struct {
	index   int // position in Engine.devs
	ordinal int // GPU ordinal (a label on the CPU backend)
	be      backend

	failed atomic.Pointer[error] // sticky: set once, never cleared
	load   atomic.Int64          // tokens of the synchronous encodes running on it
	weight atomic.Int64          // bytes of the weights loaded on it (live models)

	// fault, when set (tests only), runs before every forward pass on the
	// device; a non-nil error fails the device as a sticky fault would.
	fault atomic.Pointer[func() error]
}

// err is the device's sticky failure, or nil while it is healthy.
func (d *device) err() error {
	if p := d.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the device failed with cause (the first cause is kept).
func (d *device) fail(e *Engine, cause error) {
	err := status.Wrap(status.DeviceFailed, cause, fmt.Sprintf("device %d (ordinal %d) failed", d.index, d.ordinal))
	if d.failed.CompareAndSwap(nil, &err) {
		n := 0
		for _, o := range e.devs {
			if o.err() == nil {
				n++
			}
		}
		e.logf(LogError, "device %d (ordinal %d) failed; %d of %d devices left: %v", d.index, d.ordinal, n, len(e.devs), cause)
	}
}

// injected runs the test fault hook.
func (d *device) injected() error {
	if f := d.fault.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// deviceList resolves the options' device selection: nil means the single
// Options.Device.
func (o *Options) deviceList() ([]int, error) {
	if o.AllDevices && o.Devices != nil {
		return nil, status.Errorf(status.InvalidArgument, "both a device list and all devices were asked for; pick one")
	}
	if o.Devices == nil {
		if o.Device < 0 {
			return nil, status.Errorf(status.InvalidArgument, "device %d is negative", o.Device)
		}
		return nil, nil
	}
	if len(o.Devices) == 0 {
		return nil, status.Errorf(status.InvalidArgument, "the device list is empty (leave it nil for the single Options.Device)")
	}
	if len(o.Devices) > MaxDevices {
		return nil, status.Errorf(status.OutOfRange, "%d devices listed, at most %d", len(o.Devices), MaxDevices)
	}
	seen := map[int]bool{}
	for i, d := range o.Devices {
		switch {
		case d < 0:
			return nil, status.Errorf(status.InvalidArgument, "device list entry %d is %d, a negative ordinal", i, d)
		case d >= MaxDevices:
			return nil, status.Errorf(status.OutOfRange, "device list entry %d is ordinal %d, beyond %d", i, d, MaxDevices-1)
		case seen[d]:
			return nil, status.Errorf(status.InvalidArgument, "device list entry %d repeats ordinal %d (each device once)", i, d)
		}
		seen[d] = true
	}
	return slices.Clone(o.Devices), nil
}

// openDevices opens the backends of the selected devices (BackendAuto
// falls back to CPU replicas, one per listed ordinal, when no GPU backend is
// usable). ordinals nil: the single opts.Device (or every GPU with
// AllDevices).
func (e *Engine) openDevices(opts Options, ordinals []int) error {
	single := ordinals == nil && !opts.AllDevices
	if single {
		ordinals = []int{opts.Device}
	}
	var cudaErr error
	if opts.Backend == BackendAuto || opts.Backend == BackendCUDA {
		if opts.AllDevices {
			cudaErr = e.openAllCUDA(opts)
		} else {
			cudaErr = e.openCUDAList(opts, ordinals, !single)
		}
		if cudaErr == nil {
			return nil
		}
		if opts.Backend == BackendCUDA {
			return cudaErr
		}
		switch status.CodeOf(cudaErr) {
		case status.BackendUnavailable, status.Unsupported:
			msg := strings.Join(strings.Fields(cudaErr.Error()), " ") // one line
			e.logf(LogInfo, "no GPU backend available, using the CPU backend: %s", msg)
		default:
			return cudaErr
		}
	}
	if opts.AllDevices {
		ordinals = []int{0} // the CPU is one device
	}
	threads := opts.Threads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	// CPU replicas share the cores: each gets its share of the threads.
	per := max(1, threads/len(ordinals))
	g, packed, note := blas.Open(opts.BLAS)
	e.logf(LogInfo, "%s", note)
	for i, o := range ordinals {
		e.devs = append(e.devs, &device{index: i, ordinal: o, be: cpuBackend{cpu.New(per, g, packed, opts.Seed)}})
	}
	return nil
}

// openCUDAList opens one CUDA backend per ordinal; on any failure it
// closes those it opened. An ordinal of a list (listed) that the driver
// does not have is status.OutOfRange (no CPU fallback).
func (e *Engine) openCUDAList(opts Options, ordinals []int, listed bool) error {
	for i, o := range ordinals {
		dopts := opts
		dopts.Device = o
		be, err := openCUDA(dopts, e.log)
		if err != nil {
			e.closeDevices()
			if msg := err.Error(); listed && status.CodeOf(err) == status.BackendUnavailable && strings.Contains(msg, "requested") && !strings.Contains(msg, " 0 present") {
				// The driver works but has no such device: a bad ordinal, not a reason to fall back to the CPU.
				return status.Wrap(status.OutOfRange, err, fmt.Sprintf("device ordinal %d is not present", o))
			}
			if len(ordinals) > 1 {
				return status.Wrap(status.CodeOf(err), err, fmt.Sprintf("device list entry %d (ordinal %d)", i, o))
			}
			return err
		}
		e.devs = append(e.devs, &device{index: i, ordinal: o, be: be})
	}
	return nil
}

// openAllCUDA opens every GPU the driver lists: ordinals 0, 1, ... until
// one is not present.
func (e *Engine) openAllCUDA(opts Options) error {
	for o := 0; o < MaxDevices; o++ {
		dopts := opts
		dopts.Device = o
		be, err := openCUDA(dopts, e.log)
		if err != nil {
			if o > 0 && status.CodeOf(err) == status.BackendUnavailable && strings.Contains(err.Error(), "requested") {
				return nil // past the last device
			}
			e.closeDevices()
			return err
		}
		e.devs = append(e.devs, &device{index: o, ordinal: o, be: be})
	}
	return nil
}

func (e *Engine) closeDevices() {
	for _, d := range e.devs {
		d.be.close()
	}
	e.devs = nil
}

// NumDevices is how many devices the engine runs on.
func (e *Engine) NumDevices() int {
	if e == nil {
		return 0
	}
	return len(e.devs)
}

// DeviceErr is device i's sticky failure (status.DeviceFailed), or nil
// while it is healthy.
func (e *Engine) DeviceErr(i int) error {
	if e == nil || i < 0 || i >= len(e.devs) {
		return status.Errorf(status.OutOfRange, "no device %d", i)
	}
	d := e.devs[i]
	if err := d.err(); err != nil {
		return err
	}
	if c, ok := d.be.(cudaBackend); ok {
		if err := c.b.Device().Err(); err != nil {
			d.fail(e, err)
			return d.err()
		}
	}
	return nil
}

// allFailed is the error when every device of the engine failed.
func (e *Engine) allFailed() error {
	var causes []string
	for _, d := range e.devs {
		if err := d.err(); err != nil {
			causes = append(causes, err.Error())
		} else {
			return nil
		}
	}
	return status.Errorf(status.DeviceFailed, "every device of the engine failed (%d of %d): %s", len(causes), len(e.devs), strings.Join(causes, "; "))
}

// DeviceInfo describes one device of an engine.
type DeviceInfo struct {
	Index   int    // position in the engine's device list
	Ordinal int    // GPU ordinal (a label for CPU replicas)
	Backend string // the backend's description
	Failed  error  // the sticky failure (status.DeviceFailed); nil while healthy
	// WeightBytes is the memory of the live models' weights on the device
	// (each model is loaded once per device).
	WeightBytes int64
	// MemInUse and MemCached are the device memory the engine's pool holds
	// in live and in cached blocks, and MemTotal the device's memory (CUDA
	// only; 0 on the CPU).
	MemInUse, MemCached, MemTotal int64
	// SyncTokens is the tokens of synchronous encodes running on it now.
	SyncTokens int64
}

// Devices describes the engine's devices.
func (e *Engine) Devices() []DeviceInfo {
	if e == nil {
		return nil
	}
	out := make([]DeviceInfo, len(e.devs))
	for i, d := range e.devs {
		out[i] = DeviceInfo{Index: i, Ordinal: d.ordinal, Backend: d.be.name(), Failed: e.DeviceErr(i),
			WeightBytes: d.weight.Load(), SyncTokens: d.load.Load()}
		if c, ok := d.be.(cudaBackend); ok && out[i].Failed == nil {
			dev := c.b.Device()
			out[i].MemTotal = dev.Info().TotalMem
			_ = dev.Do(func(x *cuda.Ctx) error {
				ms := x.MemStats()
				out[i].MemInUse, out[i].MemCached = ms.InUse, ms.Cached
				return nil
			})
		}
	}
	return out
}

// SetDeviceFault installs a fault hook on device i (nil removes it): it
// runs before every forward pass there, and a non-nil error fails the
// device as a sticky GPU fault would. A test seam.
func (e *Engine) SetDeviceFault(i int, f func() error) {
	if f == nil {
		e.devs[i].fault.Store(nil)
		return
	}
	e.devs[i].fault.Store(&f)
}

// deviceKey carries a device index in a context: Async runs a batch on its
// lane's device.
type deviceKey struct{}

// onDevice returns ctx asking to run on device i.
func onDevice(ctx context.Context, i int) context.Context {
	return context.WithValue(ctx, deviceKey{}, i)
}

// pick chooses the device of a synchronous encode of tokens tokens: the
// one asked for in ctx (Async's lane), else the healthy device with the
// least work running. It returns status.DeviceFailed when the chosen
// device (or every device) failed.
func (e *Engine) pick(ctx context.Context, tokens int) (*device, error) {
	if i, ok := ctx.Value(deviceKey{}).(int); ok && i >= 0 && i < len(e.devs) {
		d := e.devs[i]
		if err := e.DeviceErr(i); err != nil {
			return nil, err
		}
		d.load.Add(int64(tokens))
		return d, nil
	}
	var best *device
	for i, d := range e.devs {
		if e.DeviceErr(i) != nil {
			continue
		}
		if best == nil || d.load.Load() < best.load.Load() {
			best = d
		}
	}
	if best == nil {
		return nil, e.allFailed()
	}
	best.load.Add(int64(tokens))
	return best, nil
}

// run runs f on device d with the fault hook, and fails d when f (or the
// hook) reports a sticky fault.
func (e *Engine) run(d *device, f func() error) error {
	if err := d.injected(); err != nil {
		d.fail(e, err)
		return d.err()
	}
	err := f()
	if err != nil && status.CodeOf(err) == status.DeviceFailed {
		d.fail(e, err)
		return d.err()
	}
	return err
}

// weightBytes is the size of p's tensors on a device computing in dt
// (float32 on the CPU, half precision on the GPU).
func weightBytes(p *model.Params, cpuBackend bool) int64 {
	n := len(p.WordEmb) + len(p.PosEmb) + len(p.TypeEmb) + len(p.EmbLNW) + len(p.EmbLNB) + len(p.PoolerW) + len(p.PoolerB)
	for i := range p.Layers {
		l := &p.Layers[i]
		n += len(l.QKVW) + len(l.QKVB) + len(l.AttnOutW) + len(l.AttnOutB) + len(l.AttnLNW) + len(l.AttnLNB) +
			len(l.InterW) + len(l.InterB) + len(l.OutW) + len(l.OutB) + len(l.OutLNW) + len(l.OutLNB)
	}
	if cpuBackend {
		return int64(n) * 4
	}
	return int64(n) * 2
}

// replicas loads p on every device: the weights once per device. The
// first device takes p itself; the others get their own copy (a backend
// owns the Params it loads). With several devices, a failed device (or one
// that fails while loading) gets no replica (nil: it takes no more work);
// the load fails only when every device failed.
func (e *Engine) replicas(p *model.Params) ([]backendModel, []int64, error) {
	bms := make([]backendModel, len(e.devs))
	sizes := make([]int64, len(e.devs))
	release := func() {
		for i, bm := range bms {
			if bm != nil {
				bm.release()
				e.devs[i].weight.Add(-sizes[i])
			}
		}
	}
	multi := len(e.devs) > 1
	loaded := 0
	for i, d := range e.devs {
		if multi && e.DeviceErr(i) != nil {
			continue
		}
		q := p
		if i < len(e.devs)-1 {
			q = cloneParams(p)
		}
		_, isCPU := d.be.(cpuBackend)
		size := weightBytes(q, isCPU)
		var bm backendModel
		err := e.run(d, func() (err error) {
			bm, err = d.be.load(q)
			return err
		})
		if err != nil {
			if multi && status.CodeOf(err) == status.DeviceFailed {
				continue // d is failed now; the others serve
			}
			release()
			if multi {
				return nil, nil, status.Wrap(status.CodeOf(err), err, fmt.Sprintf("loading on device %d (ordinal %d)", i, d.ordinal))
			}
			return nil, nil, err
		}
		d.weight.Add(size)
		bms[i], sizes[i] = bm, size
		loaded++
	}
	if loaded == 0 {
		return nil, nil, e.allFailed()
	}
	return bms, sizes, nil
}

// cloneParams copies p's tensors.
func cloneParams(p *model.Params) *model.Params {
	c := *p
	cl := func(s []float32) []float32 { return slices.Clone(s) }
	c.WordEmb, c.PosEmb, c.TypeEmb, c.EmbLNW, c.EmbLNB = cl(p.WordEmb), cl(p.PosEmb), cl(p.TypeEmb), cl(p.EmbLNW), cl(p.EmbLNB)
	c.PoolerW, c.PoolerB = cl(p.PoolerW), cl(p.PoolerB)
	c.Layers = make([]model.Layer, len(p.Layers))
	for i, l := range p.Layers {
		c.Layers[i] = model.Layer{QKVW: cl(l.QKVW), QKVB: cl(l.QKVB), AttnOutW: cl(l.AttnOutW), AttnOutB: cl(l.AttnOutB),
			AttnLNW: cl(l.AttnLNW), AttnLNB: cl(l.AttnLNB), InterW: cl(l.InterW), InterB: cl(l.InterB),
			OutW: cl(l.OutW), OutB: cl(l.OutB), OutLNW: cl(l.OutLNW), OutLNB: cl(l.OutLNB)}
	}
	return &c
}

// replicaSet is the per-device models of a Model, with the bytes each
// holds, released once.
type replicaSet struct {
	once  sync.Once
	bms   []backendModel
	sizes []int64
}

func (r *replicaSet) release(e *Engine) {
	r.once.Do(func() {
		for i, bm := range r.bms {
			if bm != nil {
				bm.release()
				e.devs[i].weight.Add(-r.sizes[i])
			}
		}
	})
}
