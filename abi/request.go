package main

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// requestObj is what a request handle refers to.
type requestObj struct {
	e *engineObj

	mu   sync.Mutex
	r    *engine.Request // set once Submit returns it, or by its completion if that comes first
	errC *C.char         // raptor_request_error's string, made on first use
}

func (ro *requestObj) req() *engine.Request {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	return ro.r
}

func (ro *requestObj) setReq(r *engine.Request) {
	ro.mu.Lock()
	ro.r = r
	ro.mu.Unlock()
}

// release frees the C memory of a request whose handle was removed.
func (ro *requestObj) release() {
	ro.mu.Lock()
	if ro.errC != nil {
		C.free(unsafe.Pointer(ro.errC))
		ro.errC = nil
	}
	ro.mu.Unlock()
}

// unregister drops ro from its engine's live requests.
func (ro *requestObj) unregister() {
	ro.e.mu.Lock()
	delete(ro.e.requests, ro)
	ro.e.mu.Unlock()
}

//export raptorgo_submit
func raptorgo_submit(mh C.uintptr_t, b *C.raptor_batch_t, o *C.raptor_output_t, done C.uintptr_t, userData C.uintptr_t, outReq *C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_submit"
	defer guard(name, &st)()
	m, err := lookup[*modelObj](handle(mh), kindModel)
	if err != nil {
		return fail(name, err)
	}
	if outReq == nil {
		return failf(name, status.InvalidArgument, "out_req is NULL")
	}
	return m.submit(name, b, o, engine.SubmitOptions{}, done, userData, outReq)
}

// submit is raptor_submit and raptor_submit_with_options after their
// argument checks: it reads the batch and outputs, makes the request handle
// and queues the request with opts (Done and Deliver are set here).
func (m *modelObj) submit(name string, b *C.raptor_batch_t, o *C.raptor_output_t, opts engine.SubmitOptions,
	done C.uintptr_t, userData C.uintptr_t, outReq *C.uintptr_t) C.raptor_status_t {
	batch, spec, outs, err := m.prepare(b, o)
	if err != nil {
		m.e.stats.RecordReject(err)
		return fail(name, err)
	}

	// The handle exists before the request does: the completion callback,
	// which may run before Submit returns, receives it.
	e := m.e
	ro := &requestObj{e: e}
	e.mu.Lock()
	if e.closed || e.shut.Load() {
		e.mu.Unlock()
		e.stats.RecordReject(status.Errorf(status.Shutdown, ""))
		return failf(name, status.Shutdown, "the engine is being freed or shut down")
	}
	h, err := handles.add(kindRequest, ro)
	if err != nil {
		e.mu.Unlock()
		return fail(name, err)
	}
	e.requests[ro] = h
	e.mu.Unlock()

	opts.Deliver = func() error { return spec.deliver(&outs) }
	if done != 0 {
		opts.Done = func(r *engine.Request) {
			ro.setReq(r)
			C.raptorc_call_completion(done, C.uintptr_t(h), C.raptor_status_t(status.CodeOf(r.Err())), userData)
		}
	}
	r, err := m.target.Submit(&batch, &outs, opts)
	if err != nil {
		handles.remove(h, kindRequest)
		ro.unregister()
		return fail(name, err)
	}
	ro.setReq(r)
	*outReq = C.uintptr_t(h)
	return C.RAPTOR_OK
}

// requestOf looks up a request handle and its submitted request.
func requestOf(h C.uintptr_t) (*requestObj, *engine.Request, error) {
	ro, err := lookup[*requestObj](handle(h), kindRequest)
	if err != nil {
		return nil, nil, err
	}
	r := ro.req()
	if r == nil { // only between handle creation and Submit's return
		return nil, nil, status.Errorf(status.InvalidHandle, "request handle %#x is not submitted yet", uint64(h))
	}
	return ro, r, nil
}

//export raptorgo_request_poll
func raptorgo_request_poll(h C.uintptr_t, done *C.int32_t, result *C.raptor_status_t) (st C.raptor_status_t) {
	const name = "raptor_request_poll"
	defer guard(name, &st)()
	_, r, err := requestOf(h)
	if err != nil {
		return fail(name, err)
	}
	if done == nil {
		return failf(name, status.InvalidArgument, "done is NULL")
	}
	finished, res := r.Poll()
	if finished {
		*done = 1
		if result != nil {
			*result = C.raptor_status_t(status.CodeOf(res))
		}
	} else {
		*done = 0
	}
	return C.RAPTOR_OK
}

//export raptorgo_request_wait
func raptorgo_request_wait(h C.uintptr_t, timeoutUS C.int64_t, result *C.raptor_status_t) (st C.raptor_status_t) {
	const name = "raptor_request_wait"
	defer guard(name, &st)()
	_, r, err := requestOf(h)
	if err != nil {
		return fail(name, err)
	}
	timeout := time.Duration(-1)
	if timeoutUS >= 0 && int64(timeoutUS) <= math.MaxInt64/int64(time.Microsecond) {
		timeout = time.Duration(timeoutUS) * time.Microsecond
	}
	res := r.Wait(timeout)
	if finished, _ := r.Poll(); !finished {
		return fail(name, res) // status.Timeout
	}
	if result != nil {
		*result = C.raptor_status_t(status.CodeOf(res))
	}
	return C.RAPTOR_OK
}

//export raptorgo_request_cancel
func raptorgo_request_cancel(h C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_request_cancel"
	defer guard(name, &st)()
	_, r, err := requestOf(h)
	if err != nil {
		return fail(name, err)
	}
	r.Cancel()
	return C.RAPTOR_OK
}

//export raptorgo_request_error
func raptorgo_request_error(h C.uintptr_t) (s *C.char) {
	const name = "raptor_request_error"
	s = emptyC
	defer guard(name, nil)()
	ro, r, err := requestOf(h)
	if err != nil {
		fail(name, err)
		return emptyC
	}
	res := r.Err()
	if res == nil {
		return emptyC
	}
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if ro.errC == nil {
		ro.errC = C.CString(res.Error())
	}
	return ro.errC
}

//export raptorgo_request_free
func raptorgo_request_free(h C.uintptr_t) {
	const name = "raptor_request_free"
	defer guard(name, nil)()
	if h == 0 {
		return
	}
	obj, err := handles.remove(handle(h), kindRequest)
	if err != nil {
		fail(name, err)
		return
	}
	ro := obj.(*requestObj)
	ro.unregister()
	if r := ro.req(); r != nil {
		r.Cancel() // no-op if it completed; else its callback still runs once
	}
	ro.release()
}
