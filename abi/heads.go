package main

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// Task heads (issue 11): logits in raptor_output_t, head fields in
// raptor_model_info_t, raptor_model_logits_shape and raptor_model_label.
// Both structs grew by appending; the library accepts their v1 size (hosts
// built against the older header) and their current size.

// Compile-time checks: the head enums equal loader's, and the v1 sizes are
// where the appended fields start (rounded up to the struct's alignment).
var (
	_ = [1]struct{}{}[C.RAPTOR_HEAD_NONE-int(loader.HeadNone)]
	_ = [1]struct{}{}[C.RAPTOR_HEAD_SEQUENCE_CLASSIFICATION-int(loader.HeadSequenceClassification)]
	_ = [1]struct{}{}[C.RAPTOR_HEAD_TOKEN_CLASSIFICATION-int(loader.HeadTokenClassification)]
	_ = [1]struct{}{}[C.RAPTOR_HEAD_QUESTION_ANSWERING-int(loader.HeadQuestionAnswering)]
	_ = [1]struct{}{}[C.RAPTOR_OUTPUT_V1_SIZE-unsafe.Offsetof(C.raptor_output_t{}.logits)]
	_ = [1]struct{}{}[C.RAPTOR_MODEL_INFO_V1_SIZE-(unsafe.Offsetof(C.raptor_model_info_t{}.head_kind)+unsafe.Sizeof(C.size_t(0))-1)/unsafe.Sizeof(C.size_t(0))*unsafe.Sizeof(C.size_t(0))]
)

// checkSizes checks a struct_size against the sizes this library knows for
// a struct that grew by appending: v1 and the current one.
func checkSizes(name string, got, v1, cur C.size_t) error {
	if got != v1 && got != cur {
		return status.Errorf(status.InvalidArgument, "%s.struct_size is %d, but this library (ABI v%d) knows sizes %d (v1) and %d: fill it with its *_default() function or set sizeof(%s)", name, got, C.RAPTOR_ABI_VERSION, v1, cur, name)
	}
	return nil
}

// copyStruct writes the first size bytes of src (whose first field is its
// size_t struct_size) to dst, with struct_size set to size.
func copyStruct(dst, src unsafe.Pointer, size C.size_t) {
	*(*C.size_t)(src) = size
	copy(unsafe.Slice((*byte)(dst), int(size)), unsafe.Slice((*byte)(src), int(size)))
}

// fillInfoHead sets the appended head fields of info.
func fillInfoHead(info *C.raptor_model_info_t, c *loader.Config) {
	if c.Head != nil {
		info.head_kind = C.int32_t(c.Head.Kind)
		info.num_labels = C.int32_t(c.Head.NumLabels)
	}
}

// readLogits reads the logits fields of a current-size output (a v1 output
// has none) and sizes them for the batch.
func (m *modelObj) readLogits(o *C.raptor_output_t, b *engine.Batch, spec *outSpec, outs *engine.Outputs) error {
	if o.struct_size < C.sizeof_raptor_output_t || o.logits == nil {
		return nil
	}
	if o.memory != C.RAPTOR_MEMORY_HOST {
		return status.Errorf(status.Unsupported, "output.logits must be host memory")
	}
	rows, cols, err := m.m.LogitsShape(b)
	if err != nil {
		return err
	}
	need := uint64(rows) * uint64(cols) * 4
	if uint64(o.logits_bytes) < need {
		return status.Errorf(status.BufferTooSmall, "output.logits_bytes is %d, needs %d ([%d, %d] float32 logits)", uint64(o.logits_bytes), need, rows, cols)
	}
	spec.logits = o.logits
	outs.Logits = make([]float32, rows*cols)
	return nil
}

//export raptorgo_model_logits_shape
func raptorgo_model_logits_shape(h C.uintptr_t, b *C.raptor_batch_t, rows, cols *C.int64_t) (st C.raptor_status_t) {
	const name = "raptor_model_logits_shape"
	defer guard(name, &st)()
	m, err := lookup[*modelObj](handle(h), kindModel)
	if err != nil {
		return fail(name, err)
	}
	if rows == nil || cols == nil {
		return failf(name, status.InvalidArgument, "rows or cols is NULL")
	}
	if m.cfg.Head == nil {
		return failf(name, status.Unsupported, "the model has no task head (converted from a base model): it has no logits")
	}
	batch, err := readBatch(b)
	if err != nil {
		return fail(name, err)
	}
	// Validate the batch as raptor_encode would, computing nothing.
	if err := m.m.Encode(nil, &batch, &engine.Outputs{}); err != nil {
		return fail(name, err)
	}
	r, c, err := m.m.LogitsShape(&batch)
	if err != nil {
		return fail(name, err)
	}
	*rows, *cols = C.int64_t(r), C.int64_t(c)
	return C.RAPTOR_OK
}

//export raptorgo_model_label
func raptorgo_model_label(h C.uintptr_t, id C.int32_t, buf *C.char, capacity C.size_t, n *C.size_t) (st C.raptor_status_t) {
	const name = "raptor_model_label"
	defer guard(name, &st)()
	m, err := lookup[*modelObj](handle(h), kindModel)
	if err != nil {
		return fail(name, err)
	}
	hd := m.cfg.Head
	switch {
	case n == nil:
		return failf(name, status.InvalidArgument, "len is NULL")
	case buf == nil && capacity != 0:
		return failf(name, status.InvalidArgument, "buf is NULL but cap is %d", uint64(capacity))
	case hd == nil:
		return failf(name, status.Unsupported, "the model has no task head, hence no labels")
	case id < 0 || int(id) >= hd.NumLabels:
		return failf(name, status.OutOfRange, "label id %d outside [0, %d)", id, hd.NumLabels)
	}
	label := fmt.Sprintf("LABEL_%d", id)
	if len(hd.Labels) > 0 {
		label = hd.Labels[id]
	}
	if buf == nil {
		*n = C.size_t(len(label))
		return C.RAPTOR_OK
	}
	if uint64(capacity) < uint64(len(label))+1 {
		return failf(name, status.BufferTooSmall, "buf holds %d bytes, label %d needs %d with its NUL", uint64(capacity), id, len(label)+1)
	}
	*n = C.size_t(len(label))
	d := unsafe.Slice((*byte)(unsafe.Pointer(buf)), len(label)+1)
	copy(d, label)
	d[len(label)] = 0
	return C.RAPTOR_OK
}
