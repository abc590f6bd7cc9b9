package raptor

import (
	"context"
	"sync"
	"unsafe"
)

// HeadKind is the task a model's head computes (RAPTOR_HEAD_*).
type HeadKind int32

const (
	HeadNone                   HeadKind = 0
	HeadSequenceClassification HeadKind = 1 // logits [n][num_labels]
	HeadTokenClassification    HeadKind = 2 // logits [T][num_labels], packed like the input
	HeadQuestionAnswering      HeadKind = 3 // logits [T][2]: start, end
)

// headsFuncs are the task-head functions appended to the ABI; a library
// that predates them answers StatusUnsupported.
type headsFuncs struct {
	once        sync.Once
	err         error
	logitsShape func(uintptr, *cBatch, *int64, *int64) int32
	label       func(uintptr, int32, *byte, uintptr, *uintptr) int32
}

func (l *Library) heads() (*headsFuncs, error) {
	l.hd.once.Do(func() {
		l.hd.err = l.registerAppended("task heads", []symbol{
			{&l.hd.logitsShape, "raptor_model_logits_shape"},
			{&l.hd.label, "raptor_model_label"},
		})
	})
	return &l.hd, l.hd.err
}

// Labels returns the label names of the model's task head in id order
// (config.json's id2label; "LABEL_<id>" where the file has none), or nil for
// a model without a head.
func (m *Model) Labels() ([]string, error) {
	info, err := m.Info()
	if err != nil || info.NumLabels == 0 {
		return nil, err
	}
	hf, err := m.lib.heads()
	if err != nil {
		return nil, err
	}
	h, err := m.handle()
	if err != nil {
		return nil, err
	}
	out := make([]string, info.NumLabels)
	for i := range out {
		var n uintptr
		if err := m.lib.call(func() int32 { return hf.label(h, int32(i), nil, 0, &n) }); err != nil {
			return nil, err
		}
		buf := make([]byte, n+1)
		if err := m.lib.call(func() int32 { return hf.label(h, int32(i), &buf[0], n+1, &n) }); err != nil {
			return nil, err
		}
		out[i] = string(buf[:n])
	}
	return out, nil
}

// Classification is the result of Classify.
type Classification struct {
	Kind   HeadKind
	Labels []string    // label names in id order
	Logits [][]float32 // one row per sequence (sequence classification) or per token, packed
	// Top is the argmax label id of each row.
	Top []int
}

// Classify runs the model's task head on sequences of token ids and returns
// its logits with the label names. opts' TokenTypes and Seeds apply; its
// pooling and hidden settings are ignored. A model without a head gives
// StatusUnsupported. ctx is checked before the (synchronous) call.
func (m *Model) Classify(ctx context.Context, seqs [][]int32, opts EncodeOptions) (*Classification, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hf, err := m.lib.heads()
	if err != nil {
		return nil, err
	}
	opts.Pooling, opts.Hidden = PoolingNone, false
	h, c, err := m.prepare(seqs, opts)
	if err != nil {
		return nil, err
	}
	var rows, cols int64
	if err := m.lib.call(func() int32 { return hf.logitsShape(h, &c.batch, &rows, &cols) }); err != nil {
		return nil, err
	}
	logits := make([]float32, rows*cols)
	c.out.StructSize = unsafe.Sizeof(cOutput{})
	if len(logits) > 0 {
		c.out.Logits = unsafe.Pointer(&logits[0])
		c.out.LogitsBytes = uintptr(4 * len(logits))
	}
	if err := m.lib.call(func() int32 { return m.lib.encode(h, &c.batch, &c.out) }); err != nil {
		return nil, err
	}
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	labels, err := m.Labels()
	if err != nil {
		return nil, err
	}
	res := &Classification{Kind: HeadKind(info.HeadKind), Labels: labels}
	for r := int64(0); r < rows; r++ {
		row := logits[r*cols : (r+1)*cols : (r+1)*cols]
		res.Logits = append(res.Logits, row)
		top := 0
		for j, v := range row {
			if v > row[top] {
				top = j
			}
		}
		res.Top = append(res.Top, top)
	}
	return res, nil
}
