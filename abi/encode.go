package main

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"encoding/binary"
	"math/bits"
	"runtime/debug"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// maxCallTokens bounds num_tokens of one call, so that every size derived
// from it fits in 64 bits; memory is checked separately (checkMemory).
const maxCallTokens = 1 << 26

// readBatch checks a C batch and copies it into Go memory. Only the
// structure is checked here (pointers and counts, which bound the copies);
// the engine validates the contents (cu_seqlens, token ids, types).
func readBatch(b *C.raptor_batch_t) (engine.Batch, error) {
	if b == nil {
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch is NULL")
	}
	if err := checkSize("raptor_batch_t", b.struct_size, C.sizeof_raptor_batch_t); err != nil {
		return engine.Batch{}, err
	}
	T, S := uint64(b.num_tokens), uint64(b.num_seqs)
	switch {
	case T == 0:
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch.num_tokens is 0: a batch holds at least one token")
	case T > maxCallTokens:
		return engine.Batch{}, status.Errorf(status.OutOfRange, "batch.num_tokens %d exceeds %d", T, maxCallTokens)
	case S == 0:
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch.num_seqs is 0: a batch holds at least one sequence")
	case S > T:
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch.num_seqs %d > num_tokens %d: every sequence holds at least one token", S, T)
	case b.token_ids == nil:
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch.token_ids is NULL")
	case b.cu_seqlens == nil:
		return engine.Batch{}, status.Errorf(status.InvalidArgument, "batch.cu_seqlens is NULL")
	}
	out := engine.Batch{
		Tokens:    readInt32s(unsafe.Pointer(b.token_ids), int(T)),
		CuSeqlens: readInt32s(unsafe.Pointer(b.cu_seqlens), int(S)+1),
	}
	if b.token_type_ids != nil {
		out.TokenTypes = readInt32s(unsafe.Pointer(b.token_type_ids), int(T))
	}
	if b.seeds != nil {
		out.Seeds = make([]uint64, S)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out.Seeds))), 8*S), unsafe.Slice((*byte)(unsafe.Pointer(b.seeds)), 8*S))
	}
	return out, nil
}

// readInt32s copies n int32s from C memory of any alignment.
func readInt32s(p unsafe.Pointer, n int) []int32 {
	s := make([]int32, n)
	copy(int32Bytes(s), unsafe.Slice((*byte)(p), 4*n))
	return s
}

func int32Bytes(s []int32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 4*len(s))
}

func float32Bytes(s []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 4*len(s))
}

// outSpec is where the results of one call go in the caller's memory.
type outSpec struct {
	fp16           bool
	hidden, pooled unsafe.Pointer // nil = not requested
	logits         unsafe.Pointer // nil = not requested; always float32 (heads.go)
}

// readOutput checks a C output description for a batch of T tokens in S
// sequences of a model with hidden size H, and returns the Go outputs the
// engine writes. Host results are computed into Go memory, then delivered;
// device results (RAPTOR_MEMORY_DEVICE, fp32 only, an engine whose
// DeviceOutputs is true: onGPU) are written by the backend straight into the
// caller's device pointers, which pass through unread: the caller vouches
// that they are device memory of the engine's GPU of at least the sizes
// given (the sizes are checked, as for host memory).
func readOutput(o *C.raptor_output_t, T, S, H int, onGPU bool) (outSpec, engine.Outputs, error) {
	var spec outSpec
	var outs engine.Outputs
	if o == nil {
		return spec, outs, status.Errorf(status.InvalidArgument, "output is NULL")
	}
	if err := checkSizes("raptor_output_t", o.struct_size, C.RAPTOR_OUTPUT_V1_SIZE, C.sizeof_raptor_output_t); err != nil {
		return spec, outs, err
	}
	device := false
	switch o.memory {
	case C.RAPTOR_MEMORY_HOST:
	case C.RAPTOR_MEMORY_DEVICE:
		if !onGPU {
			return spec, outs, status.Errorf(status.Unsupported, "output.memory RAPTOR_MEMORY_DEVICE needs the CUDA backend; this engine runs on the CPU")
		}
		device = true
	default:
		return spec, outs, status.Errorf(status.InvalidArgument, "unknown output.memory %d (RAPTOR_MEMORY_HOST or _DEVICE)", o.memory)
	}
	elem := uint64(4)
	switch o.dtype {
	case C.RAPTOR_DTYPE_FP32:
	case C.RAPTOR_DTYPE_FP16:
		if device {
			return spec, outs, status.Errorf(status.Unsupported, "output.dtype RAPTOR_DTYPE_FP16 with RAPTOR_MEMORY_DEVICE: device outputs are FP32 only (use FP32, or host memory for FP16)")
		}
		spec.fp16, elem = true, 2
	case C.RAPTOR_DTYPE_BF16:
		return spec, outs, status.Errorf(status.Unsupported, "output.dtype RAPTOR_DTYPE_BF16 is not supported for outputs (FP32 or FP16)")
	default:
		return spec, outs, status.Errorf(status.InvalidArgument, "unknown output.dtype %d (RAPTOR_DTYPE_FP32 or _FP16)", o.dtype)
	}
	switch o.pooling {
	case C.RAPTOR_POOLING_CLS:
		outs.Pooling = engine.PoolCLS
	case C.RAPTOR_POOLING_MEAN:
		outs.Pooling = engine.PoolMean
	case C.RAPTOR_POOLING_POOLER:
		outs.Pooling = engine.PoolPooler // the engine checks that the model has a pooler
	default:
		return spec, outs, status.Errorf(status.InvalidArgument, "unknown output.pooling %d (RAPTOR_POOLING_CLS, _MEAN or _POOLER)", o.pooling)
	}
	outs.Normalize = o.normalize != 0
	need := func(what string, rows int, have C.size_t) error {
		hi, n := bits.Mul64(uint64(rows)*uint64(H), elem)
		if hi != 0 || uint64(have) < n {
			return status.Errorf(status.BufferTooSmall, "output.%s_bytes is %d, needs %d (%d x hidden %d x %d-byte elements)", what, uint64(have), n, rows, H, elem)
		}
		return nil
	}
	if o.hidden != nil {
		if err := need("hidden", T, o.hidden_bytes); err != nil {
			return spec, outs, err
		}
		if device {
			outs.HiddenDevice = uintptr(o.hidden)
		} else {
			spec.hidden = o.hidden
			outs.Hidden = make([]float32, T*H)
		}
	}
	if o.pooled != nil {
		if err := need("pooled", S, o.pooled_bytes); err != nil {
			return spec, outs, err
		}
		if device {
			outs.PooledDevice = uintptr(o.pooled)
		} else {
			spec.pooled = o.pooled
			outs.Pooled = make([]float32, S*H)
		}
	}
	return spec, outs, nil
}

// deliver writes the results into the caller's buffers, converting to fp16
// if asked, byte by byte (so any alignment works). A memory fault on a
// buffer (an invalid pointer passed in) is returned as status.Internal; it
// may run on any goroutine.
func (s *outSpec) deliver(out *engine.Outputs) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(status.Internal, "writing the outputs: %v (is an output buffer pointer invalid?)", p)
		}
	}()
	writeFloats(s.hidden, out.Hidden, s.fp16)
	writeFloats(s.pooled, out.Pooled, s.fp16)
	writeFloats(s.logits, out.Logits, false)
	return nil
}

func writeFloats(dst unsafe.Pointer, src []float32, fp16 bool) {
	if dst == nil || len(src) == 0 {
		return
	}
	if !fp16 {
		copy(unsafe.Slice((*byte)(dst), 4*len(src)), float32Bytes(src))
		return
	}
	d := unsafe.Slice((*byte)(dst), 2*len(src))
	for i, v := range src {
		binary.NativeEndian.PutUint16(d[2*i:], loader.F32ToF16(v))
	}
}

// checkMemory refuses a batch whose working set could not fit in memory, so
// that it fails with a status instead of the Go runtime's fatal
// out-of-memory error. The estimate is generous: the activations of one
// layer (hidden states, QKV, FFN) plus the outputs, in float32.
func checkMemory(cfg *loader.Config, T int) error {
	perToken := uint64(6*cfg.Hidden+cfg.Intermediate) * 4
	if hi, n := bits.Mul64(uint64(T), perToken); hi != 0 || n > memoryLimit()/2 {
		return status.Errorf(status.OutOfMemory, "a batch of %d tokens needs about %d bytes of working memory, more than this machine can spare", T, n)
	}
	return nil
}

// prepare converts and checks the C batch and outputs for model m.
func (m *modelObj) prepare(b *C.raptor_batch_t, o *C.raptor_output_t) (engine.Batch, outSpec, engine.Outputs, error) {
	batch, err := readBatch(b)
	if err != nil {
		return batch, outSpec{}, engine.Outputs{}, err
	}
	if err := checkMemory(&m.cfg, len(batch.Tokens)); err != nil {
		return batch, outSpec{}, engine.Outputs{}, err
	}
	spec, outs, err := readOutput(o, len(batch.Tokens), batch.NumSeqs(), m.cfg.Hidden, m.e.eng.DeviceOutputs())
	if err == nil {
		err = m.readLogits(o, &batch, &spec, &outs) // heads.go
	}
	return batch, spec, outs, err
}

//export raptorgo_encode
func raptorgo_encode(h C.uintptr_t, b *C.raptor_batch_t, o *C.raptor_output_t) (st C.raptor_status_t) {
	const name = "raptor_encode"
	defer guard(name, &st)()
	m, err := liveModel(h)
	if err != nil {
		return fail(name, err)
	}
	batch, spec, outs, err := m.prepare(b, o)
	if err != nil {
		return fail(name, err)
	}
	end := m.e.stats.BeginCompute()
	err = m.m.Encode(context.Background(), &batch, &outs)
	end()
	if err == nil {
		err = spec.deliver(&outs)
	}
	m.e.stats.RecordSync(len(batch.Tokens), outs.PaddedTokens, err)
	if err != nil {
		return fail(name, err)
	}
	return C.RAPTOR_OK
}
