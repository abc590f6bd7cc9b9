package main

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/tokenizer"
	"github.com/raptor-infer/raptor/loader"
)

// modelObj is what a model handle refers to.
type modelObj struct {
	e      *engineObj
	m      *engine.Model
	cfg    loader.Config
	tok    *tokenizer.Tokenizer // nil when the file has no vocabulary
	target *engine.Target       // its asynchronous requests
}

// close completes the model's pending requests with SHUTDOWN, waits for
// running calls and releases it. Idempotent.
func (m *modelObj) close() {
	m.e.mu.Lock()
	delete(m.e.models, m)
	m.e.mu.Unlock()
	m.target.Close()
	m.m.Close()
}

// liveModel looks up the model handle of a call that computes with it:
// status.Shutdown once raptor_engine_shutdown started.
func liveModel(h C.uintptr_t) (*modelObj, error) {
	m, err := lookup[*modelObj](handle(h), kindModel)
	if err != nil {
		return nil, err
	}
	if m.e.shut.Load() {
		return nil, status.Errorf(status.Shutdown, "the engine was shut down (raptor_engine_shutdown)")
	}
	return m, nil
}

// addModel loads f (closing it) on e and returns the new model's handle.
func (e *engineObj) addModel(f *loader.File) (handle, error) {
	defer f.Close()
	if e.shut.Load() {
		return 0, status.Errorf(status.Shutdown, "the engine was shut down (raptor_engine_shutdown)")
	}
	var tok *tokenizer.Tokenizer
	if spec, ok := f.Tokenizer(); ok {
		t, err := tokenizer.New(tokenizer.Spec(*spec))
		if err != nil {
			return 0, status.Wrap(status.InvalidModel, err, "the model's tokenizer section")
		}
		tok = t
	}
	m, err := e.eng.Load(f)
	if err != nil {
		return 0, err
	}
	mo := &modelObj{e: e, m: m, cfg: m.Config(), tok: tok, target: e.async.Target(m)}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.shut.Load() {
		mo.target.Close()
		m.Close()
		return 0, status.Errorf(status.Shutdown, "the engine is being freed")
	}
	h, err := handles.add(kindModel, mo)
	if err != nil {
		mo.target.Close()
		m.Close()
		return 0, err
	}
	e.models[mo] = h
	return h, nil
}

//export raptorgo_model_load
func raptorgo_model_load(eh C.uintptr_t, path *C.char, out *C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_model_load"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(eh), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	if path == nil {
		return failf(name, status.InvalidArgument, "path is NULL")
	}
	if out == nil {
		return failf(name, status.InvalidArgument, "out is NULL")
	}
	f, err := loader.Open(C.GoString(path))
	return e.finishLoad(name, f, err, out)
}

// finishLoad loads an opened weight file (or reports why it did not open)
// and writes the model's handle to out.
func (e *engineObj) finishLoad(name string, f *loader.File, err error, out *C.uintptr_t) C.raptor_status_t {
	if err != nil {
		return fail(name, err)
	}
	h, err := e.addModel(f)
	if err != nil {
		return fail(name, err)
	}
	*out = C.uintptr_t(h)
	return C.RAPTOR_OK
}

//export raptorgo_model_load_from_memory
func raptorgo_model_load_from_memory(eh C.uintptr_t, data unsafe.Pointer, size C.size_t, out *C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_model_load_from_memory"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(eh), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	switch {
	case data == nil:
		return failf(name, status.InvalidArgument, "data is NULL")
	case size == 0:
		return failf(name, status.InvalidArgument, "size is 0")
	case out == nil:
		return failf(name, status.InvalidArgument, "out is NULL")
	}
	if limit := memoryLimit(); uint64(size) > limit {
		return failf(name, status.OutOfRange, "size %d exceeds the largest model image this process can copy (%d bytes)", uint64(size), limit)
	}
	// The caller may free data when this returns, and the reader aliases
	// its input: copy it into Go memory.
	buf := make([]byte, int(size))
	copy(buf, unsafe.Slice((*byte)(data), int(size)))
	f, err := loader.Read(buf)
	return e.finishLoad(name, f, err, out)
}

//export raptorgo_model_free
func raptorgo_model_free(h C.uintptr_t) {
	const name = "raptor_model_free"
	defer guard(name, nil)()
	if h == 0 || refuseInCallback(name) {
		return
	}
	obj, err := handles.remove(handle(h), kindModel)
	if err != nil {
		fail(name, err)
		return
	}
	obj.(*modelObj).close()
}

func boolInt(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

//export raptorgo_model_get_info
func raptorgo_model_get_info(h C.uintptr_t, info *C.raptor_model_info_t) (st C.raptor_status_t) {
	const name = "raptor_model_get_info"
	defer guard(name, &st)()
	m, err := lookup[*modelObj](handle(h), kindModel)
	if err != nil {
		return fail(name, err)
	}
	if info == nil {
		return failf(name, status.InvalidArgument, "info is NULL")
	}
	if err := checkSizes("raptor_model_info_t", info.struct_size, C.RAPTOR_MODEL_INFO_V1_SIZE, C.sizeof_raptor_model_info_t); err != nil {
		return fail(name, err)
	}
	c := &m.cfg
	full := C.raptor_model_info_t{
		struct_size:         C.sizeof_raptor_model_info_t,
		family:              C.int32_t(c.Family),
		vocab_size:          C.int32_t(c.VocabSize),
		hidden_size:         C.int32_t(c.Hidden),
		num_layers:          C.int32_t(c.Layers),
		num_heads:           C.int32_t(c.Heads),
		intermediate_size:   C.int32_t(c.Intermediate),
		max_positions:       C.int32_t(c.MaxPositions),
		max_sequence_length: C.int32_t(c.MaxPositions - c.PositionOffset),
		type_vocab_size:     C.int32_t(c.TypeVocabSize),
		activation:          C.int32_t(c.Activation),
		attention:           C.int32_t(c.Attention),
		block_size:          C.int32_t(c.BlockSize),
		random_blocks:       C.int32_t(c.RandomBlocks),
		position_offset:     C.int32_t(c.PositionOffset),
		pad_token_id:        C.int32_t(c.PadTokenID),
		weight_dtype:        C.int32_t(c.DType),
		has_pooler:          boolInt(c.Pooler),
		has_tokenizer:       boolInt(m.tok != nil),
		layer_norm_eps:      C.float(c.LayerNormEps),
	}
	fillInfoHead(&full, c) // heads.go
	copyStruct(unsafe.Pointer(info), unsafe.Pointer(&full), info.struct_size)
	return C.RAPTOR_OK
}

// maxTextBytes bounds the text raptor_model_tokenize accepts.
const maxTextBytes = 1 << 30

//export raptorgo_model_tokenize
func raptorgo_model_tokenize(h C.uintptr_t, text *C.char, textLen C.size_t, maxTokens C.int32_t,
	ids *C.int32_t, capacity C.size_t, nIDs *C.size_t) (st C.raptor_status_t) {
	const name = "raptor_model_tokenize"
	defer guard(name, &st)()
	m, err := lookup[*modelObj](handle(h), kindModel)
	if err != nil {
		return fail(name, err)
	}
	switch {
	case text == nil && textLen != 0:
		return failf(name, status.InvalidArgument, "text is NULL but text_len is %d", uint64(textLen))
	case textLen > maxTextBytes:
		return failf(name, status.OutOfRange, "text_len %d exceeds %d bytes", uint64(textLen), maxTextBytes)
	case nIDs == nil:
		return failf(name, status.InvalidArgument, "n_ids is NULL")
	case ids == nil && capacity != 0:
		return failf(name, status.InvalidArgument, "ids is NULL but capacity is %d", uint64(capacity))
	case maxTokens < 0:
		return failf(name, status.InvalidArgument, "max_tokens %d is negative (0 = the model's max_sequence_length)", maxTokens)
	case maxTokens == 1:
		return failf(name, status.InvalidArgument, "max_tokens 1 cannot hold [CLS] and [SEP]")
	}
	if m.tok == nil {
		return failf(name, status.Unsupported, "the model file carries no tokenizer vocabulary")
	}
	limit := int(maxTokens)
	if limit == 0 {
		limit = m.cfg.MaxPositions - m.cfg.PositionOffset
	}
	var s string
	if textLen > 0 {
		s = C.GoStringN(text, C.int(textLen))
	}
	toks, err := m.tok.Encode(s, limit)
	if err != nil {
		return fail(name, status.Wrap(status.InvalidArgument, err, "tokenize"))
	}
	if ids != nil || capacity != 0 {
		if uint64(capacity) < uint64(len(toks)) {
			return failf(name, status.BufferTooSmall, "ids holds %d ids, the text needs %d", uint64(capacity), len(toks))
		}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(ids)), 4*len(toks)), int32Bytes(toks)) // any alignment
	}
	*nIDs = C.size_t(len(toks))
	return C.RAPTOR_OK
}
