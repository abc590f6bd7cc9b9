package loader

import (
	"bytes"
	"io"
	"runtime"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/raptor-infer/raptor/internal/status"
)

// WriterOptions configure a Writer. The zero value writes uncompressed
// tensors in DefaultChunkSize chunks.
type WriterOptions struct {
	// Codec stores every tensor with this codec. A tensor that a
	// compressed codec does not shrink is stored uncompressed.
	Codec Codec
	// Level is the zstd level: 1 fastest, 2 default, 3 better, 4 best
	// (zstd.EncoderLevel). 0 means 1: on weights (few matches; the gain is
	// entropy-coding the skewed exponent bytes) the higher levels compress
	// no better and are slower.
	Level int
	// ChunkSize is the raw bytes per chunk, a power of two in
	// [MinChunkSize, MaxChunkSize]; 0 means DefaultChunkSize.
	ChunkSize int
	// Parallelism is how many goroutines compress chunks; 0 means
	// runtime.GOMAXPROCS(0).
	Parallelism int
	// Producer is free text recorded in the file (program and source).
	Producer string
}

// Writer builds a weight file: add every tensor, then WriteTo or Bytes.
// Tensors are converted and compressed as they are added, so the Writer
// holds only the stored bytes. A Writer is not safe for concurrent use.
type Writer struct {
	cfg     Config
	opts    WriterOptions
	tensors []wtensor
	names   map[string]bool
	enc     *zstd.Encoder
	err     error // an invalid option, reported by every call
}

type wtensor struct {
	rawTensor
	stored []byte
}

// NewWriter returns a Writer for a model with configuration cfg. cfg is
// validated when the file is written.
func NewWriter(cfg Config, opts WriterOptions) *Writer {
	w := &Writer{cfg: cfg, opts: opts, names: map[string]bool{}}
	if w.opts.ChunkSize == 0 {
		w.opts.ChunkSize = DefaultChunkSize
	}
	if w.opts.Level == 0 {
		w.opts.Level = int(zstd.SpeedFastest)
	}
	if w.opts.Parallelism <= 0 {
		w.opts.Parallelism = runtime.GOMAXPROCS(0)
	}
	cs := w.opts.ChunkSize
	switch {
	case cs < MinChunkSize || cs > MaxChunkSize || cs&(cs-1) != 0:
		w.err = status.Errorf(status.InvalidArgument, "chunk size %d is not a power of two in [%d, %d]", cs, MinChunkSize, MaxChunkSize)
	case !opts.Codec.valid():
		w.err = status.Errorf(status.InvalidArgument, "unknown codec %d", uint8(opts.Codec))
	case w.opts.Level < int(zstd.SpeedFastest) || w.opts.Level > int(zstd.SpeedBestCompression):
		w.err = status.Errorf(status.InvalidArgument, "zstd level %d outside [1, 4]", w.opts.Level)
	case len(opts.Producer) > maxNameLen:
		w.err = status.Errorf(status.InvalidArgument, "producer string longer than %d bytes", maxNameLen)
	}
	return w
}

// Add converts data to dtype (rounding to nearest even) and adds it as the
// tensor name with the given shape. Converting to f16 fails with
// status.OutOfRange if a finite value overflows to infinity.
func (w *Writer) Add(name string, dtype DType, shape []int, data []float32) error {
	if err := w.checkAdd(name, dtype, shape); err != nil {
		return err
	}
	if n := elements(shape); n != len(data) {
		return status.Errorf(status.InvalidArgument, "tensor %q: shape %v has %d elements, got %d values", name, shape, n, len(data))
	}
	raw, overflow := encodeF32(make([]byte, 0, len(data)*dtype.Size()), data, dtype)
	if overflow > 0 {
		return status.Errorf(status.OutOfRange, "tensor %q: %d of %d values overflow %s to infinity (largest |value| representable is 65504); store it as bf16 or f32", name, overflow, len(data), dtype)
	}
	return w.add(name, dtype, shape, raw, true)
}

// AddRaw adds the tensor name whose little-endian elements of dtype are raw.
// raw is copied or compressed before AddRaw returns.
func (w *Writer) AddRaw(name string, dtype DType, shape []int, raw []byte) error {
	if err := w.checkAdd(name, dtype, shape); err != nil {
		return err
	}
	if n := elements(shape) * dtype.Size(); n != len(raw) {
		return status.Errorf(status.InvalidArgument, "tensor %q: shape %v of %s is %d bytes, got %d", name, shape, dtype, n, len(raw))
	}
	if w.opts.Codec == CodecNone {
		return w.add(name, dtype, shape, bytes.Clone(raw), true)
	}
	return w.add(name, dtype, shape, raw, false)
}

func elements(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

func (w *Writer) checkAdd(name string, dtype DType, shape []int) error {
	if w.err != nil {
		return w.err
	}
	if name == "" || len(name) > maxNameLen || !utf8.ValidString(name) {
		return status.Errorf(status.InvalidArgument, "tensor name %q is empty, longer than %d bytes or not UTF-8", name, maxNameLen)
	}
	if w.names[name] {
		return status.Errorf(status.InvalidArgument, "tensor %q added twice", name)
	}
	if !dtype.valid() {
		return status.Errorf(status.InvalidArgument, "tensor %q: unknown dtype %d", name, uint8(dtype))
	}
	us := make([]uint64, len(shape))
	for i, s := range shape {
		if s <= 0 {
			return status.Errorf(status.InvalidArgument, "tensor %q: shape %v has a dimension < 1", name, shape)
		}
		us[i] = uint64(s)
	}
	if _, err := shapeBytes(us, dtype); err != nil {
		return status.Errorf(status.InvalidArgument, "tensor %q: %v", name, err)
	}
	return nil
}

// add stores raw with the Writer's codec; owned says whether the Writer may
// keep raw itself.
func (w *Writer) add(name string, dtype DType, shape []int, raw []byte, owned bool) error {
	cs := w.opts.ChunkSize
	n := (len(raw) + cs - 1) / cs
	t := wtensor{rawTensor: rawTensor{name: name, dtype: uint8(dtype), rawSize: uint64(len(raw)), crcs: make([]uint32, n)}}
	t.shape = make([]uint64, len(shape))
	for i, s := range shape {
		t.shape[i] = uint64(s)
	}
	codec := w.opts.Codec
	var frames [][]byte
	if codec != CodecNone {
		if w.enc == nil {
			enc, err := zstd.NewWriter(nil,
				zstd.WithEncoderLevel(zstd.EncoderLevel(w.opts.Level)),
				zstd.WithEncoderCRC(false),
				zstd.WithEncoderConcurrency(w.opts.Parallelism),
				zstd.WithWindowSize(max(cs, zstd.MinWindowSize)),
				// Weights rarely have matches; entropy-coding the literals is
				// where the gain is (the exponent bytes are very skewed).
				zstd.WithAllLitEntropyCompression(true))
			if err != nil {
				return status.Wrap(status.Internal, err, "create zstd encoder")
			}
			w.enc = enc
		}
		frames = make([][]byte, n)
	}
	// Checksum (and compress) the chunks in parallel.
	var wg sync.WaitGroup
	sem := make(chan struct{}, w.opts.Parallelism)
	for c := 0; c < n; c++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(c int) {
			defer func() { <-sem; wg.Done() }()
			chunk := raw[c*cs : min((c+1)*cs, len(raw))]
			t.crcs[c] = crc32c(chunk)
			if codec == CodecNone {
				return
			}
			src := chunk
			if codec == CodecZstdShuffle && dtype.Size() > 1 {
				src = make([]byte, len(chunk))
				shuffle(src, chunk, dtype.Size())
			}
			frames[c] = w.enc.EncodeAll(src, make([]byte, 0, len(src)/2))
		}(c)
	}
	wg.Wait()
	t.codec = uint8(codec)
	t.stored = raw
	if codec != CodecNone {
		total := 0
		for _, f := range frames {
			total += len(f)
		}
		if total < len(raw) {
			t.stored = make([]byte, 0, total)
			t.chunkLens = make([]uint32, n)
			for c, f := range frames {
				t.stored = append(t.stored, f...)
				t.chunkLens[c] = uint32(len(f))
			}
		} else {
			// Incompressible: keep the raw bytes, which the reader can map.
			t.codec = uint8(CodecNone)
			if !owned {
				t.stored = bytes.Clone(raw)
			}
		}
	}
	t.length = uint64(len(t.stored))
	w.tensors = append(w.tensors, t)
	w.names[name] = true
	return nil
}

// header lays out the data section and returns the file header.
func (w *Writer) header() (*header, error) {
	if w.err != nil {
		return nil, w.err
	}
	if err := w.cfg.Validate(); err != nil {
		return nil, status.Errorf(status.InvalidArgument, "%v", err)
	}
	shapes := make(map[string][]int, len(w.tensors))
	for _, t := range w.tensors {
		s := make([]int, len(t.shape))
		for i, d := range t.shape {
			s[i] = int(d)
		}
		shapes[t.name] = s
	}
	if err := checkExpected(w.cfg, shapes); err != nil {
		return nil, status.Errorf(status.InvalidArgument, "%v", err)
	}
	if len(w.tensors) > maxTensors {
		return nil, status.Errorf(status.InvalidArgument, "%d tensors exceed the limit of %d", len(w.tensors), maxTensors)
	}
	cfg, tok := rawFromConfig(w.cfg)
	h := &header{version: FormatVersion, cfg: cfg, tok: tok, chunkSize: uint32(w.opts.ChunkSize), producer: w.opts.Producer, head: w.cfg.Head}
	var off uint64
	h.tensors = make([]rawTensor, len(w.tensors))
	for i := range w.tensors {
		w.tensors[i].offset = off
		h.tensors[i] = w.tensors[i].rawTensor
		off = alignUp(off+w.tensors[i].length, DataAlign)
	}
	h.dataSize = off
	if n := len(w.tensors); n > 0 {
		h.dataSize = h.tensors[n-1].offset + h.tensors[n-1].length
	}
	if err := headerLayout(h); err != nil {
		return nil, status.Errorf(status.InvalidArgument, "%v", err)
	}
	return h, nil
}

// WriteTo writes the weight file to out. It fails with
// status.InvalidArgument if the config is invalid or a tensor the config
// needs is missing or misshapen, and status.IO if out fails.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	h, err := w.header()
	if err != nil {
		return 0, err
	}
	var written int64
	write := func(b []byte) error {
		n, err := out.Write(b)
		written += int64(n)
		if err != nil {
			return status.Wrap(status.IO, err, "write weight file")
		}
		return nil
	}
	if err := write(assembleFile(h)); err != nil {
		return written, err
	}
	var pad [DataAlign]byte
	pos := uint64(0)
	for _, t := range w.tensors {
		if err := write(pad[:t.offset-pos]); err != nil {
			return written, err
		}
		if err := write(t.stored); err != nil {
			return written, err
		}
		pos = t.offset + t.length
	}
	return written, nil
}

// Bytes returns the weight file as one buffer.
func (w *Writer) Bytes() ([]byte, error) {
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Size returns the number of bytes WriteTo would write.
func (w *Writer) Size() (int64, error) {
	h, err := w.header()
	if err != nil {
		return 0, err
	}
	return int64(h.dataOffset + h.dataSize), nil
}
