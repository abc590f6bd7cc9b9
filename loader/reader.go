package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/klauspost/compress/zstd"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader/internal/mmap"
)

// File is an open raptor weight file. Its methods are safe for concurrent
// use, except Close, which must not run concurrently with any other method.
//
// Uncompressed tensors stay in the memory-mapped file (or in the caller's
// buffer for Read) and are never copied; compressed tensors are
// decompressed once, when the file is opened.
type File struct {
	cfg      Config
	tensors  []tensor
	index    map[string]int
	info     FileInfo
	data     []byte       // the whole file
	unmap    func() error // nil for Read
	release  func() error // frees the decompressed tensors' memory
	parallel int
	closed   bool
}

// FileInfo describes a weight file as a whole.
type FileInfo struct {
	Version    int    // format version
	Size       int64  // file size in bytes
	HeaderSize int    // flatbuffer header bytes
	DataOffset int64  // file offset of the data section
	ChunkSize  int    // raw bytes per chunk
	Producer   string // the program and source that wrote the file
	Mapped     bool   // whether the file is memory-mapped (Open) or a caller's buffer (Read)
}

// TensorInfo describes one tensor of a weight file.
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int
	Codec      Codec
	Offset     int64 // file offset of the stored bytes
	StoredSize int64 // bytes in the file
	RawSize    int64 // bytes once decompressed: product(Shape) * DType.Size()
	Chunks     int
}

// Elements returns the number of elements, product(Shape).
func (t TensorInfo) Elements() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

type tensor struct {
	info      TensorInfo
	stored    []byte   // the bytes in the file
	raw       []byte   // the raw elements: stored, or the decompressed copy
	chunkLens []uint32 // compressed codecs only
	crcs      []uint32
}

// Option configures Open and Read.
type Option func(*options)

type options struct {
	verify          bool
	maxDecompressed int64
	parallel        int
}

// SkipVerify skips checksum verification when the file is opened, so an
// uncompressed file is only mapped and its data never read. Structural
// validation still happens in full. Call (*File).Verify to check later.
func SkipVerify() Option { return func(o *options) { o.verify = false } }

// MaxDecompressed caps the total bytes allocated for decompressed tensors
// (default DefaultMaxDecompressed). A file declaring more is rejected before
// anything is allocated.
func MaxDecompressed(n int64) Option { return func(o *options) { o.maxDecompressed = n } }

// Parallelism sets how many goroutines decompress and verify chunks
// (default runtime.GOMAXPROCS(0)).
func Parallelism(n int) Option { return func(o *options) { o.parallel = n } }

func buildOptions(opts []Option) options {
	o := options{verify: true, maxDecompressed: DefaultMaxDecompressed, parallel: runtime.GOMAXPROCS(0)}
	for _, f := range opts {
		f(&o)
	}
	if o.parallel < 1 {
		o.parallel = 1
	}
	return o
}

// Open opens, validates and prepares the weight file at path. Uncompressed
// tensors are memory-mapped; compressed ones are decompressed in parallel.
// Checksums are verified unless SkipVerify is given. Errors are
// *status.Error: status.IO when the file cannot be read, status.InvalidModel
// when it is not a valid raptor weight file.
func Open(path string, opts ...Option) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, status.Wrap(status.IO, err, "open weight file")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, status.Wrap(status.IO, err, "stat weight file")
	}
	if !st.Mode().IsRegular() {
		return nil, status.Errorf(status.IO, "weight file %s is not a regular file", path)
	}
	size := st.Size()
	if size < preambleSize {
		return nil, status.Errorf(status.InvalidModel, "weight file %s: file too short: %d bytes (a raptor weight file starts with a %d-byte preamble; truncated?)", path, size, preambleSize)
	}
	data, unmap, err := mmap.File(f, size)
	if err != nil {
		return nil, status.Wrap(status.IO, err, "map weight file "+path)
	}
	wf, err := parse(data, buildOptions(opts))
	if err != nil {
		unmap()
		return nil, prefixError(err, "weight file "+path)
	}
	wf.unmap = unmap
	wf.info.Mapped = true
	return wf, nil
}

// Read validates and prepares a weight file held in memory. The File
// aliases data for uncompressed tensors: data must stay unmodified until
// the File is closed and no longer used.
func Read(data []byte, opts ...Option) (*File, error) {
	f, err := parse(data, buildOptions(opts))
	if err != nil {
		return nil, prefixError(err, "weight file")
	}
	return f, nil
}

func prefixError(err error, prefix string) error {
	var se *status.Error
	if errors.As(err, &se) {
		return &status.Error{Code: se.Code, Msg: prefix + ": " + se.Msg, Err: se.Err}
	}
	return status.Wrap(status.Internal, err, prefix)
}

func invalid(format string, args ...any) error {
	return status.Errorf(status.InvalidModel, format, args...)
}

// parse validates data as a weight file and prepares its tensors.
func parse(data []byte, o options) (f *File, err error) {
	// The verifier makes every access below safe; this is a last line of
	// defence, so that a bug in it is an error and not a crash of the host.
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, status.Errorf(status.InvalidModel, "malformed header (unchecked structure: %v)", r)
		}
	}()
	n := uint64(len(data))
	if n < preambleSize {
		return nil, invalid("file too short: %d bytes (a raptor weight file starts with a %d-byte preamble; truncated?)", n, preambleSize)
	}
	if string(data[:4]) != Magic {
		return nil, invalid("not a raptor weight file: it starts with %q, want %q", data[:4], Magic)
	}
	hsize := uint64(binary.LittleEndian.Uint32(data[4:]))
	if hsize < 8 || hsize > maxHeaderSize {
		return nil, invalid("header size %d outside [8, %d]", hsize, maxHeaderSize)
	}
	if preambleSize+hsize > n {
		return nil, invalid("file truncated: the %d-byte header runs past the end of the %d-byte file", hsize, n)
	}
	hdr := data[preambleSize : preambleSize+hsize]
	if id := string(hdr[4:8]); id != Magic {
		return nil, invalid("not a raptor weight file: header identifier %q, want %q", id, Magic)
	}
	if r := binary.LittleEndian.Uint32(data[12:]); r != 0 {
		return nil, invalid("reserved preamble field is %#x, want 0 (written by a newer raptor?)", r)
	}
	if want, got := binary.LittleEndian.Uint32(data[8:]), crc32c(hdr); want != got {
		return nil, invalid("header checksum mismatch: stored %08x, computed %08x (file corrupt)", want, got)
	}
	if err := verifyHeader(hdr); err != nil {
		return nil, invalid("malformed header: %v", err)
	}
	h, err := decodeHeader(hdr)
	if err != nil {
		return nil, invalid("malformed header: %v", err)
	}
	if h.version != FormatVersion {
		return nil, invalid("unsupported format version %d (this build reads version %d)", h.version, FormatVersion)
	}

	// The data section.
	if h.dataOffset%DataAlign != 0 || h.dataOffset < preambleSize+hsize || h.dataOffset > n {
		return nil, invalid("data section offset %d is not a multiple of %d between the header end %d and the file end %d", h.dataOffset, DataAlign, preambleSize+hsize, n)
	}
	if h.dataSize > n-h.dataOffset {
		return nil, invalid("file truncated: the data section ends at byte %d but the file has %d bytes", h.dataOffset+h.dataSize, n)
	}
	if end := h.dataOffset + h.dataSize; end < n {
		return nil, invalid("%d unexpected bytes after the data section (which ends at byte %d)", n-end, end)
	}
	cs := uint64(h.chunkSize)
	if cs < MinChunkSize || cs > MaxChunkSize || cs&(cs-1) != 0 {
		return nil, invalid("chunk size %d is not a power of two in [%d, %d]", cs, MinChunkSize, MaxChunkSize)
	}

	cfg := configFromRaw(h.cfg, h.tok)
	cfg.Head = h.head
	if err := cfg.Validate(); err != nil {
		return nil, invalid("%v", err)
	}

	// The tensor table.
	data = data[:len(data):len(data)]
	section := data[h.dataOffset : h.dataOffset+h.dataSize]
	f = &File{
		cfg:     cfg,
		tensors: make([]tensor, len(h.tensors)),
		index:   make(map[string]int, len(h.tensors)),
		data:    data,
		info: FileInfo{
			Version: int(h.version), Size: int64(n), HeaderSize: int(hsize), DataOffset: int64(h.dataOffset),
			ChunkSize: int(cs), Producer: h.producer,
		},
		parallel: o.parallel,
	}
	names := make([]string, len(h.tensors))
	offsets := make([]uint64, len(h.tensors))
	lengths := make([]uint64, len(h.tensors))
	shapes := make(map[string][]int, len(h.tensors))
	var decompressed uint64
	for i := range h.tensors {
		rt := &h.tensors[i]
		if err := checkTensor(rt, cs, uint64(o.maxDecompressed)); err != nil {
			return nil, invalid("%v", err)
		}
		if _, dup := f.index[rt.name]; dup {
			return nil, invalid("tensor %q appears twice", rt.name)
		}
		if rt.codec != uint8(CodecNone) {
			decompressed += rt.rawSize
			if decompressed > uint64(o.maxDecompressed) {
				return nil, invalid("compressed tensors up to %q declare %s decompressed in all, above the limit of %s (see loader.MaxDecompressed)", rt.name, byteSize(decompressed), byteSize(uint64(o.maxDecompressed)))
			}
		}
		names[i], offsets[i], lengths[i] = rt.name, rt.offset, rt.length
		shape := make([]int, len(rt.shape))
		for j, s := range rt.shape {
			shape[j] = int(s)
		}
		f.index[rt.name] = i
		shapes[rt.name] = shape
		f.tensors[i] = tensor{
			info: TensorInfo{
				Name: rt.name, DType: DType(rt.dtype), Shape: shape, Codec: Codec(rt.codec),
				Offset: int64(h.dataOffset + rt.offset), StoredSize: int64(rt.length), RawSize: int64(rt.rawSize),
				Chunks: len(rt.crcs),
			},
			chunkLens: rt.chunkLens,
			crcs:      rt.crcs,
		}
	}
	if err := checkLayout(names, offsets, lengths, h.dataSize); err != nil {
		return nil, invalid("%v", err)
	}
	if err := checkExpected(cfg, shapes); err != nil {
		return nil, invalid("%v", err)
	}
	for i := range f.tensors {
		t := &f.tensors[i]
		t.stored = section[offsets[i] : offsets[i]+lengths[i] : offsets[i]+lengths[i]]
	}
	if err := f.prepare(o.verify); err != nil {
		if f.release != nil {
			f.release()
		}
		return nil, err
	}
	return f, nil
}

// checkTensor checks one tensor entry on its own. maxDecompressed caps the
// raw size of a compressed tensor.
func checkTensor(t *rawTensor, chunkSize, maxDecompressed uint64) error {
	if t.name == "" || !utf8.ValidString(t.name) {
		return fmt.Errorf("tensor name %q is empty or not UTF-8", t.name)
	}
	d, c := DType(t.dtype), Codec(t.codec)
	if !d.valid() {
		return fmt.Errorf("tensor %q: unknown dtype %d", t.name, t.dtype)
	}
	if !c.valid() {
		return fmt.Errorf("tensor %q: unknown codec %d", t.name, t.codec)
	}
	size, err := shapeBytes(t.shape, d)
	if err != nil {
		return fmt.Errorf("tensor %q: %v", t.name, err)
	}
	if size != t.rawSize {
		return fmt.Errorf("tensor %q: shape %v of %s is %d bytes, but its raw size says %d", t.name, t.shape, d, size, t.rawSize)
	}
	if c != CodecNone && size > maxDecompressed {
		return fmt.Errorf("tensor %q declares %s decompressed, above the limit of %s (see loader.MaxDecompressed)", t.name, byteSize(size), byteSize(maxDecompressed))
	}
	chunks := (size + chunkSize - 1) / chunkSize
	if uint64(len(t.crcs)) != chunks {
		return fmt.Errorf("tensor %q: %d chunk checksums for %d chunks", t.name, len(t.crcs), chunks)
	}
	if c == CodecNone {
		if t.length != size {
			return fmt.Errorf("tensor %q: stored length %d differs from its raw size %d (codec none)", t.name, t.length, size)
		}
		if len(t.chunkLens) != 0 {
			return fmt.Errorf("tensor %q: chunk lengths given for an uncompressed tensor", t.name)
		}
		return nil
	}
	if uint64(len(t.chunkLens)) != chunks {
		return fmt.Errorf("tensor %q: %d chunk lengths for %d chunks", t.name, len(t.chunkLens), chunks)
	}
	var sum uint64
	for j, l := range t.chunkLens {
		if l == 0 {
			return fmt.Errorf("tensor %q: chunk %d has length 0", t.name, j)
		}
		sum += uint64(l)
	}
	if sum != t.length {
		return fmt.Errorf("tensor %q: chunk lengths add up to %d, but its stored length is %d", t.name, sum, t.length)
	}
	return nil
}

// job is one chunk to decompress and/or verify.
type job struct {
	t     int
	chunk int
	src   int // offset of the chunk in tensor.stored (compressed codecs)
}

// prepare decompresses compressed tensors (allocating their raw buffers) and
// verifies chunk checksums if verify is set, in parallel.
func (f *File) prepare(verify bool) error {
	// One anonymous mapping holds every decompressed tensor: outside the Go
	// heap, never zeroed twice, and given back by Close.
	var total uint64
	for i := range f.tensors {
		if t := &f.tensors[i]; t.info.Codec != CodecNone {
			total = alignUp(total+uint64(t.info.RawSize), DataAlign)
		}
	}
	compressed := total > 0
	var arena []byte
	if compressed {
		var err error
		arena, f.release, err = mmap.Anon(int(total))
		if err != nil {
			return status.Wrap(status.OutOfMemory, err, fmt.Sprintf("allocate %s for decompressed tensors", byteSize(total)))
		}
	}
	var jobs []job
	var pos uint64
	for i := range f.tensors {
		t := &f.tensors[i]
		if t.info.Codec == CodecNone {
			t.raw = t.stored
			if verify {
				for c := range t.crcs {
					jobs = append(jobs, job{t: i, chunk: c})
				}
			}
			continue
		}
		end := pos + uint64(t.info.RawSize)
		t.raw = arena[pos:end:end]
		pos = alignUp(end, DataAlign)
		src := 0
		for c, l := range t.chunkLens {
			jobs = append(jobs, job{t: i, chunk: c, src: src})
			src += int(l)
		}
	}
	var dec *zstd.Decoder
	if compressed {
		window := uint64(f.info.ChunkSize)
		if window < zstd.MinWindowSize {
			window = zstd.MinWindowSize
		}
		var err error
		dec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(f.parallel),
			zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(uint64(f.info.ChunkSize)),
			zstd.WithDecoderMaxWindow(window))
		if err != nil {
			return status.Wrap(status.Internal, err, "create zstd decoder")
		}
		defer dec.Close()
	}
	return f.run(jobs, func(j job, scratch *[]byte) error { return f.doChunk(dec, j, verify, scratch) })
}

// run executes jobs on f.parallel goroutines. It reports the errors of the
// first failing tensors in file order.
func (f *File) run(jobs []job, do func(job, *[]byte) error) error {
	if len(jobs) == 0 {
		return nil
	}
	errs := make([]error, len(f.tensors))
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(f.parallel, len(jobs))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A file truncated or changed under the mapping faults on access:
			// turn that into an error instead of a crash.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			var scratch []byte
			for {
				k := int(next.Add(1) - 1)
				if k >= len(jobs) {
					return
				}
				j := jobs[k]
				err := safeDo(func() error { return do(j, &scratch) })
				if err != nil {
					mu.Lock()
					if errs[j.t] == nil {
						errs[j.t] = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	var failed []string
	var first error
	for i, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			failed = append(failed, f.tensors[i].info.Name)
		}
	}
	if first == nil {
		return nil
	}
	if len(failed) > 1 {
		var se *status.Error
		if errors.As(first, &se) {
			return &status.Error{Code: se.Code, Msg: fmt.Sprintf("%s (%d tensors fail: %s)", se.Msg, len(failed), listNames(failed, 5)), Err: se.Err}
		}
	}
	return first
}

func safeDo(do func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(status.IO, "reading the weight file failed (changed or truncated while mapped?): %v", r)
		}
	}()
	return do()
}

// doChunk decompresses (compressed codecs) and verifies (if verify) one chunk.
func (f *File) doChunk(dec *zstd.Decoder, j job, verify bool, scratch *[]byte) error {
	t := &f.tensors[j.t]
	cs := f.info.ChunkSize
	start := j.chunk * cs
	end := min(start+cs, len(t.raw))
	dst := t.raw[start:end]
	if t.info.Codec != CodecNone {
		frame := t.stored[j.src : j.src+int(t.chunkLens[j.chunk])]
		var zh zstd.Header
		if err := zh.Decode(frame); err != nil {
			return invalid("tensor %q chunk %d: bad zstd frame: %v", t.info.Name, j.chunk, err)
		}
		if zh.HasFCS && zh.FrameContentSize != uint64(len(dst)) {
			return invalid("tensor %q chunk %d: zstd frame declares %d bytes, the chunk has %d", t.info.Name, j.chunk, zh.FrameContentSize, len(dst))
		}
		// Decode into a per-worker scratch buffer with a little slack past
		// the chunk: zstd's fast copy loops need 32 spare bytes (without
		// them it takes slower exact copies), and they may scribble there,
		// which must not reach the neighbouring chunk another worker owns.
		// Output beyond the chunk is caught by the length check below.
		const slack = 64
		if cap(*scratch) < len(dst)+slack {
			*scratch = make([]byte, len(dst)+slack)
		}
		out := (*scratch)[: 0 : len(dst)+slack]
		got, err := dec.DecodeAll(frame, out)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || len(got) > len(dst) {
			return invalid("tensor %q chunk %d: zstd data decompresses to more than the %d bytes declared", t.info.Name, j.chunk, len(dst))
		}
		if err != nil {
			return invalid("tensor %q chunk %d: corrupt zstd data: %v", t.info.Name, j.chunk, err)
		}
		if len(got) != len(dst) {
			return invalid("tensor %q chunk %d: zstd data decompresses to %d bytes, want %d", t.info.Name, j.chunk, len(got), len(dst))
		}
		if t.info.Codec == CodecZstdShuffle && t.info.DType.Size() > 1 {
			unshuffle(dst, got, t.info.DType.Size())
		} else {
			copy(dst, got)
		}
	}
	if verify {
		if got, want := crc32c(dst), t.crcs[j.chunk]; got != want {
			return invalid("checksum mismatch in tensor %q chunk %d of %d: stored %08x, computed %08x (file corrupt)", t.info.Name, j.chunk, len(t.crcs), want, got)
		}
	}
	return nil
}

// Verify checks every chunk checksum of every tensor and reports the
// tensors that fail. Open and Read already do this unless SkipVerify is given.
func (f *File) Verify() error {
	if f.closed {
		return status.Errorf(status.InvalidArgument, "weight file is closed")
	}
	var jobs []job
	for i := range f.tensors {
		for c := range f.tensors[i].crcs {
			jobs = append(jobs, job{t: i, chunk: c})
		}
	}
	return f.run(jobs, func(j job, _ *[]byte) error {
		t := &f.tensors[j.t]
		cs := f.info.ChunkSize
		start := j.chunk * cs
		dst := t.raw[start:min(start+cs, len(t.raw))]
		if got, want := crc32c(dst), t.crcs[j.chunk]; got != want {
			return invalid("checksum mismatch in tensor %q chunk %d of %d: stored %08x, computed %08x (file corrupt)", t.info.Name, j.chunk, len(t.crcs), want, got)
		}
		return nil
	})
}

// Close releases the file's mapping and the memory of its decompressed
// tensors; a File that is never closed holds them until the process exits.
// Slices returned by Raw must not be used afterwards. Close is idempotent.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	for i := range f.tensors {
		f.tensors[i].raw, f.tensors[i].stored = nil, nil
	}
	f.data = nil
	var err error
	if f.release != nil {
		err = f.release()
	}
	if f.unmap != nil {
		if e := f.unmap(); err == nil {
			err = e
		}
	}
	if err != nil {
		return status.Wrap(status.IO, err, "unmap weight file")
	}
	return nil
}

// Config returns the model configuration.
func (f *File) Config() Config { return f.cfg }

// Tokenizer returns the tokenizer section, if the file has one. The spec is
// shared: do not modify it.
func (f *File) Tokenizer() (*TokenizerSpec, bool) { return f.cfg.Tokenizer, f.cfg.Tokenizer != nil }

// Info describes the file as a whole.
func (f *File) Info() FileInfo { return f.info }

// Names returns the tensor names in file order.
func (f *File) Names() []string {
	out := make([]string, len(f.tensors))
	for i := range f.tensors {
		out[i] = f.tensors[i].info.Name
	}
	return out
}

// Tensor describes the named tensor.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	info := f.tensors[i].info
	info.Shape = append([]int(nil), info.Shape...)
	return info, true
}

func (f *File) lookup(name string) (*tensor, error) {
	if f.closed {
		return nil, status.Errorf(status.InvalidArgument, "weight file is closed")
	}
	i, ok := f.index[name]
	if !ok {
		return nil, status.Errorf(status.InvalidModel, "weight file has no tensor %q", name)
	}
	return &f.tensors[i], nil
}

// Raw returns the named tensor's raw little-endian elements (of its
// DType). The slice is read-only — for uncompressed tensors it is the
// memory-mapped file itself, and writing to it crashes the process — and
// valid until Close.
func (f *File) Raw(name string) ([]byte, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return t.raw, nil
}

// Float32 returns the named tensor converted to float32 in a new slice the
// caller owns, and its shape.
func (f *File) Float32(name string) (data []float32, shape []int, err error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, t.info.Elements())
	err = safeDo(func() error {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		if t.info.DType == F32 && littleEndian && len(out) > 0 {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), 4*len(out)), t.raw)
		} else {
			decodeF32(out, t.raw, t.info.DType)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, append([]int(nil), t.info.Shape...), nil
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// byteSize formats n bytes for messages.
func byteSize(n uint64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
