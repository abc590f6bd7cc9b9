package raptor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
)

// ModelInfo is a model's config (raptor_model_info_t).
type ModelInfo struct {
	Family            int32 // 0 bert, 1 roberta, 2 bigbird
	VocabSize         int
	HiddenSize        int
	NumLayers         int
	NumHeads          int
	IntermediateSize  int
	MaxPositions      int
	MaxSequenceLength int
	TypeVocabSize     int
	Activation        int32 // 0 gelu, 1 gelu_tanh
	Attention         int32 // 0 dense, 1 block_sparse
	BlockSize         int
	RandomBlocks      int
	PositionOffset    int
	PadTokenID        int
	WeightDType       DType
	HasPooler         bool
	HasTokenizer      bool
	LayerNormEps      float32
	HeadKind          HeadKind // task head (appended to the ABI); HeadNone for a bare encoder
	NumLabels         int      // logits per row; 0 without a head
}

// Model is a loaded model (raptor_model_t). It is safe for concurrent use.
type Model struct {
	eng    *Engine
	lib    *Library
	h      uintptr
	info   ModelInfo
	closed atomic.Bool
}

func (m *Model) handle() (uintptr, error) {
	if m.closed.Load() {
		return 0, &Error{Status: StatusInvalidHandle, Msg: "model is closed"}
	}
	return m.h, nil
}

func (m *Model) markClosed() { m.closed.Store(true) }

// Engine is the engine the model was loaded by.
func (m *Model) Engine() *Engine { return m.eng }

// Info returns the model's config.
func (m *Model) Info() (ModelInfo, error) {
	h, err := m.handle()
	if err != nil {
		return ModelInfo{}, err
	}
	c := cModelInfo{StructSize: unsafe.Sizeof(cModelInfo{})}
	if err := m.lib.call(func() int32 { return m.lib.modelGetInfo(h, &c) }); err != nil {
		return ModelInfo{}, err
	}
	return ModelInfo{
		Family: c.Family, VocabSize: int(c.VocabSize), HiddenSize: int(c.HiddenSize),
		NumLayers: int(c.NumLayers), NumHeads: int(c.NumHeads), IntermediateSize: int(c.IntermediateSize),
		MaxPositions: int(c.MaxPositions), MaxSequenceLength: int(c.MaxSequenceLength),
		TypeVocabSize: int(c.TypeVocabSize), Activation: c.Activation, Attention: c.Attention,
		BlockSize: int(c.BlockSize), RandomBlocks: int(c.RandomBlocks), PositionOffset: int(c.PositionOffset),
		PadTokenID: int(c.PadTokenID), WeightDType: DType(c.WeightDType), HasPooler: c.HasPooler != 0,
		HasTokenizer: c.HasTokenizer != 0, LayerNormEps: c.LayerNormEps,
		HeadKind: HeadKind(c.HeadKind), NumLabels: int(c.NumLabels),
	}, nil
}

// Tokenize returns the token ids of text under the model's WordPiece
// vocabulary ([CLS] first, [SEP] last), truncated to maxTokens (0 = the
// model's longest sequence).
func (m *Model) Tokenize(text string, maxTokens int) ([]int32, error) {
	h, err := m.handle()
	if err != nil {
		return nil, err
	}
	buf := []byte(text + "\x00") // NUL-terminated for good measure; the length is passed
	var n uintptr
	if err := m.lib.call(func() int32 {
		return m.lib.modelTokenize(h, &buf[0], uintptr(len(text)), int32(maxTokens), nil, 0, &n)
	}); err != nil {
		return nil, err
	}
	ids := make([]int32, n+1)
	if err := m.lib.call(func() int32 {
		return m.lib.modelTokenize(h, &buf[0], uintptr(len(text)), int32(maxTokens), &ids[0], uintptr(len(ids)), &n)
	}); err != nil {
		return nil, err
	}
	return ids[:n], nil
}

// Pooling selects the pooled output of Encode. The zero value is mean pooling.
type Pooling int

// Poolings.
const (
	PoolingMean   Pooling = iota // mean over the sequence's tokens (sentence-transformers)
	PoolingCLS                   // the first token's hidden state
	PoolingNone                  // no pooled output (use with Hidden)
	PoolingPooler                // BERT's pooler_output, tanh(W h_CLS + b) (models with HasPooler)
)

// EncodeOptions select an encode's outputs. The zero value asks for mean-pooled,
// unnormalised float32 embeddings.
type EncodeOptions struct {
	Pooling    Pooling
	Normalize  bool      // L2-normalise pooled vectors
	Hidden     bool      // also return the last hidden states
	TokenTypes [][]int32 // nil, or one slice per sequence of the same length
	Seeds      []uint64  // nil, or one per sequence: per-request seeds of the sparse plan
}

// Result is what an encode produced.
type Result struct {
	HiddenSize int
	Pooled     [][]float32 // [n][HiddenSize]; nil with PoolingNone
	Hidden     [][]float32 // [n][len_i*HiddenSize] row-major; nil unless Hidden was asked
}

// call is one encode's C structs and the Go memory they point into.
type call struct {
	ids, cu, types []int32
	seeds          []uint64
	pooled, hidden []float32
	batch          cBatch
	out            cOutput
	n, hiddenSize  int
}

// prepare checks the model is open and builds the call's C structs.
func (m *Model) prepare(seqs [][]int32, opts EncodeOptions) (uintptr, *call, error) {
	h, err := m.handle()
	if err != nil {
		return 0, nil, err
	}
	c, err := m.newCall(seqs, opts)
	return h, c, err
}

func (m *Model) newCall(seqs [][]int32, opts EncodeOptions) (*call, error) {
	c := &call{n: len(seqs), hiddenSize: m.info.HiddenSize}
	c.cu = make([]int32, len(seqs)+1)
	total := 0
	for i, s := range seqs {
		total += len(s)
		if total > 1<<31-1 {
			return nil, &Error{Status: StatusOutOfRange, Msg: "batch has more than 2^31-1 tokens"}
		}
		c.cu[i+1] = int32(total)
	}
	c.ids = make([]int32, 0, total)
	for _, s := range seqs {
		c.ids = append(c.ids, s...)
	}
	if opts.TokenTypes != nil {
		if len(opts.TokenTypes) != len(seqs) {
			return nil, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("%d token-type slices for %d sequences", len(opts.TokenTypes), len(seqs))}
		}
		c.types = make([]int32, 0, total)
		for i, t := range opts.TokenTypes {
			if len(t) != len(seqs[i]) {
				return nil, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("sequence %d: %d token types for %d tokens", i, len(t), len(seqs[i]))}
			}
			c.types = append(c.types, t...)
		}
	}
	if opts.Seeds != nil {
		if len(opts.Seeds) != len(seqs) {
			return nil, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("%d seeds for %d sequences", len(opts.Seeds), len(seqs))}
		}
		c.seeds = append([]uint64(nil), opts.Seeds...)
	}
	m.lib.batchDefault(&c.batch)
	c.batch.TokenIDs = first(c.ids)
	c.batch.NumTokens = uintptr(len(c.ids))
	c.batch.CuSeqlens = &c.cu[0]
	c.batch.NumSeqs = uintptr(len(seqs))
	c.batch.TokenTypeIDs = first(c.types)
	if len(c.seeds) > 0 {
		c.batch.Seeds = &c.seeds[0]
	}

	m.lib.outputDefault(&c.out)
	c.out.DType = cDTypeFP32
	if opts.Normalize {
		c.out.Normalize = 1
	}
	switch opts.Pooling {
	case PoolingMean, PoolingCLS, PoolingPooler:
		c.out.Pooling = map[Pooling]int32{PoolingMean: cPoolingMean, PoolingCLS: cPoolingCLS, PoolingPooler: cPoolingPooler}[opts.Pooling]
		c.pooled = make([]float32, len(seqs)*c.hiddenSize)
		if len(c.pooled) > 0 {
			c.out.Pooled = unsafe.Pointer(&c.pooled[0])
			c.out.PooledBytes = uintptr(len(c.pooled) * 4)
		}
	case PoolingNone:
	default:
		return nil, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("unknown pooling %d", opts.Pooling)}
	}
	if opts.Hidden {
		c.hidden = make([]float32, total*c.hiddenSize)
		if len(c.hidden) > 0 {
			c.out.Hidden = unsafe.Pointer(&c.hidden[0])
			c.out.HiddenBytes = uintptr(len(c.hidden) * 4)
		}
	}
	return c, nil
}

func first(s []int32) *int32 {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

func (c *call) result() *Result {
	r := &Result{HiddenSize: c.hiddenSize}
	h := c.hiddenSize
	if c.pooled != nil {
		r.Pooled = make([][]float32, c.n)
		for i := range r.Pooled {
			r.Pooled[i] = c.pooled[i*h : (i+1)*h : (i+1)*h]
		}
	}
	if c.hidden != nil {
		r.Hidden = make([][]float32, c.n)
		for i := range r.Hidden {
			a, b := int(c.cu[i])*h, int(c.cu[i+1])*h
			r.Hidden[i] = c.hidden[a:b:b]
		}
	}
	return r
}

// Encode encodes sequences of token ids and returns their pooled embeddings.
// A context that can be cancelled makes the encode asynchronous (Submit) so
// that cancelling it cancels the request.
func (m *Model) Encode(ctx context.Context, seqs [][]int32, opts EncodeOptions) ([][]float32, error) {
	if opts.Pooling == PoolingNone {
		return nil, &Error{Status: StatusInvalidArgument, Msg: "Encode returns pooled embeddings: use EncodeFull for PoolingNone"}
	}
	r, err := m.EncodeFull(ctx, seqs, opts)
	if err != nil {
		return nil, err
	}
	return r.Pooled, nil
}

// EncodeFull encodes sequences of token ids and returns every output asked for.
func (m *Model) EncodeFull(ctx context.Context, seqs [][]int32, opts EncodeOptions) (*Result, error) {
	if ctx.Done() != nil {
		r, err := m.Submit(ctx, seqs, opts)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return r.Wait(ctx)
	}
	h, c, err := m.prepare(seqs, opts)
	if err != nil {
		return nil, err
	}
	if err := m.lib.call(func() int32 { return m.lib.encode(h, &c.batch, &c.out) }); err != nil {
		return nil, err
	}
	return c.result(), nil
}

// Request is an asynchronous encode (raptor_request_t).
type Request struct {
	lib   *Library
	h     uintptr
	c     *call
	done  chan struct{}
	err   error // set before done is closed
	stop  func() bool
	close sync.Once
}

// Completions come back through one purego callback (purego callbacks are
// never released); user_data is a key into pending, which also keeps each
// request's Go memory reachable while the library writes into it.
var (
	completionOnce sync.Once
	completionCB   uintptr
	pendingMu      sync.Mutex
	pending        = map[uintptr]*Request{}
	nextKey        uintptr
)

func onComplete(req uintptr, st int32, key uintptr) {
	pendingMu.Lock()
	r := pending[key]
	delete(pending, key)
	pendingMu.Unlock()
	if r == nil {
		return
	}
	if st != 0 {
		r.err = &Error{Status: Status(st), Msg: r.lib.requestError(req)}
	}
	close(r.done)
}

// Submit queues sequences for asynchronous encoding and returns at once.
// Cancelling ctx cancels the request. Close the Request when done with it.
func (m *Model) Submit(ctx context.Context, seqs [][]int32, opts EncodeOptions) (*Request, error) {
	return m.submit(ctx, seqs, opts, nil)
}

// submit is Submit, through raptor_submit_with_options when so is not nil.
func (m *Model) submit(ctx context.Context, seqs [][]int32, opts EncodeOptions, so *cSubmitOptions) (*Request, error) {
	h, c, err := m.prepare(seqs, opts)
	if err != nil {
		return nil, err
	}
	var sf *schedFuncs
	if so != nil {
		if sf, err = m.lib.sched(); err != nil {
			return nil, err
		}
	}
	completionOnce.Do(func() { completionCB = purego.NewCallback(onComplete) })
	r := &Request{lib: m.lib, c: c, done: make(chan struct{})}
	pendingMu.Lock()
	nextKey++
	key := nextKey
	pending[key] = r
	pendingMu.Unlock()
	var rh uintptr
	if err := m.lib.call(func() int32 {
		if so != nil {
			return sf.submitWithOptions(h, &c.batch, &c.out, so, completionCB, key, &rh)
		}
		return m.lib.submit(h, &c.batch, &c.out, completionCB, key, &rh)
	}); err != nil {
		pendingMu.Lock()
		delete(pending, key)
		pendingMu.Unlock()
		return nil, err
	}
	r.h = rh
	r.stop = context.AfterFunc(ctx, func() { _ = r.Cancel() })
	return r, nil
}

// Done is closed when the request has completed.
func (r *Request) Done() <-chan struct{} { return r.done }

// Poll reports whether the request completed (raptor_request_poll).
func (r *Request) Poll() (bool, error) {
	var done, res int32
	if err := r.lib.call(func() int32 { return r.lib.requestPoll(r.h, &done, &res) }); err != nil {
		return false, err
	}
	return done != 0, nil
}

// Cancel asks the library to cancel the request; it then completes with
// ErrCancelled unless it had already completed.
func (r *Request) Cancel() error {
	return r.lib.call(func() int32 { return r.lib.requestCancel(r.h) })
}

// Wait waits for the request and returns its result. If ctx is done first,
// the request is cancelled and Wait returns an error matching both ctx.Err()
// and ErrCancelled (or the result, if the request completed anyway).
func (r *Request) Wait(ctx context.Context) (*Result, error) {
	select {
	case <-r.done:
	case <-ctx.Done():
		_ = r.Cancel()
		<-r.done
		if r.err != nil {
			return nil, fmt.Errorf("%w: %w", ctx.Err(), r.err)
		}
	}
	r.stop() // the request is done: its context no longer needs watching
	if r.err != nil {
		return nil, r.err
	}
	return r.c.result(), nil
}

// Close frees the request handle; a pending request is cancelled (its
// completion still arrives). Closing twice does nothing.
func (r *Request) Close() {
	r.close.Do(func() {
		if r.stop != nil {
			r.stop()
		}
		r.lib.requestFree(r.h)
	})
}

// Close frees the model; its pending requests complete with ErrShutdown first.
func (m *Model) Close() {
	if m.closed.Swap(true) {
		return
	}
	m.eng.mu.Lock()
	engineOpen := !m.eng.closed
	delete(m.eng.models, m)
	m.eng.mu.Unlock()
	if engineOpen {
		m.lib.modelFree(m.h)
	}
}
