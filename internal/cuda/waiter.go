package cuda

import (
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// The event waiter: a second goroutine, locked to its own OS thread with the
// device's primary context current, that only queries events
// (cuEventQuery). Device.WaitEvent hands it an event and returns once the
// work before the event completed, without a job on the device worker: a
// caller polling through Do waited behind every job queued before its poll,
// so a batch's completion was seen only after the next batch's whole enqueue
// (0.7-2 ms of kernel launches on an H100 serving all-MiniLM-L6-v2, the GPU
// long idle by then; bench/RESULTS.md, issue 8). The driver API is thread
// safe and a context may be current on several threads; the worker still
// makes every other call (ARCHITECTURE.md, decision 3: no goroutine ever
// changes threads with the context current).
//
// The waiter polls its events every ~10 us (nanosleep, with this thread's
// timer slack cut to 1 us) while it has any, and sleeps on its channel
// otherwise. RAPTOR_GPU_WAITER=0 turns it off (WaitEvent then answers
// Unsupported and callers poll through Do).

var waiterOff = os.Getenv("RAPTOR_GPU_WAITER") == "0"

type watchReq struct {
	ev   Event
	done chan error
}

// WaitEvent waits until the work before e has completed. A non-nil error
// means the waiter could not tell (off, closed, or a query failed: the
// error says which); the caller then checks e through Do, where a sticky
// fault fails the device as usual.
func (d *Device) WaitEvent(e Event) error {
	if waiterOff {
		return status.Errorf(status.Unsupported, "cuda: the event waiter is off (RAPTOR_GPU_WAITER=0)")
	}
	done := make(chan error, 1)
	d.mu.RLock()
	if d.closed || d.watch == nil {
		d.mu.RUnlock()
		return status.Errorf(status.Shutdown, "cuda: device %d is closed", d.info.Ordinal)
	}
	d.watch <- watchReq{ev: e, done: done}
	d.mu.RUnlock()
	return <-done
}

const prSetTimerslack = 29 // PR_SET_TIMERSLACK

func (d *Device) waiter(drv *driverAPI, pctx uintptr) {
	runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
	defer close(d.waiterDone)
	ctxErr := drv.check("cuCtxSetCurrent", drv.cuCtxSetCurrent(pctx))
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1000, 0)
	var list []watchReq
	open := true
	for open || len(list) > 0 {
		if len(list) == 0 {
			r, ok := <-d.watch
			if !ok {
				return
			}
			list = append(list, r)
		}
		for more := open; more; {
			select {
			case r, ok := <-d.watch:
				if !ok {
					open, more = false, false
					break
				}
				list = append(list, r)
			default:
				more = false
			}
		}
		keep := list[:0]
		for _, r := range list {
			if ctxErr != nil {
				r.done <- ctxErr
				continue
			}
			switch rc := drv.cuEventQuery(uintptr(r.ev)); rc {
			case 0:
				r.done <- nil
			case 600: // CUDA_ERROR_NOT_READY
				keep = append(keep, r)
			default:
				r.done <- drv.check("cuEventQuery", rc)
			}
		}
		for i := len(keep); i < len(list); i++ {
			list[i] = watchReq{}
		}
		list = keep
		if len(list) > 0 {
			ts := syscall.NsecToTimespec(int64(10 * time.Microsecond))
			_ = syscall.Nanosleep(&ts, nil)
		}
	}
}
