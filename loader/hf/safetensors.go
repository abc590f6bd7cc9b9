package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"os"
	"sort"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader/internal/mmap"
)

// maxSafetensorsHeader bounds the JSON header of a safetensors file
// (the safetensors library itself refuses headers over 100 MB).
const maxSafetensorsHeader = 100 << 20

// stTensor is one tensor of a safetensors file.
type stTensor struct {
	Name  string
	DType string // "F32", "F16", "BF16", "I64", ...
	Shape []int
	Data  []byte // little-endian elements, aliasing the mapped file
	File  string
}

// stFile is a memory-mapped safetensors file.
type stFile struct {
	path    string
	tensors map[string]*stTensor
	unmap   func() error
}

var stDTypeSize = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
	"F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}

// openSafetensors maps and validates a safetensors file: the header is
// JSON {name: {dtype, shape, data_offsets: [begin, end]}} after an 8-byte
// little-endian length; offsets are relative to the end of the header.
func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, status.Wrap(status.IO, err, "open safetensors file")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, status.Wrap(status.IO, err, "stat safetensors file")
	}
	data, unmap, err := mmap.File(f, st.Size())
	if err != nil {
		return nil, status.Wrap(status.IO, err, "map safetensors file "+path)
	}
	sf, err := parseSafetensors(path, data)
	if err != nil {
		unmap()
		return nil, err
	}
	sf.unmap = unmap
	return sf, nil
}

func parseSafetensors(path string, data []byte) (*stFile, error) {
	bad := func(format string, args ...any) error {
		return status.Errorf(status.InvalidModel, "safetensors file %s: %s", path, fmt.Sprintf(format, args...))
	}
	if len(data) < 8 {
		return nil, bad("too short (%d bytes)", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxSafetensorsHeader || n > uint64(len(data))-8 {
		return nil, bad("header length %d is larger than the file or %d bytes", n, maxSafetensorsHeader)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &hdr); err != nil {
		return nil, bad("bad JSON header: %v", err)
	}
	body := data[8+n:]
	sf := &stFile{path: path, tensors: map[string]*stTensor{}}
	type span struct {
		b, e uint64
		name string
	}
	var spans []span
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, bad("tensor %q: %v", name, err)
		}
		size, ok := stDTypeSize[e.DType]
		if !ok {
			return nil, bad("tensor %q: unknown dtype %q", name, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] > e.Offsets[1] || e.Offsets[1] > uint64(len(body)) {
			return nil, bad("tensor %q: data offsets %v outside the %d-byte data section", name, e.Offsets, len(body))
		}
		want := uint64(size)
		for _, d := range e.Shape {
			hi, lo := bits.Mul64(want, uint64(d))
			if d < 0 || hi != 0 {
				return nil, bad("tensor %q: bad shape %v", name, e.Shape)
			}
			want = lo
		}
		if got := e.Offsets[1] - e.Offsets[0]; got != want {
			return nil, bad("tensor %q: shape %v of %s needs %d bytes, data offsets give %d", name, e.Shape, e.DType, want, got)
		}
		sf.tensors[name] = &stTensor{Name: name, DType: e.DType, Shape: e.Shape, Data: body[e.Offsets[0]:e.Offsets[1]], File: path}
		spans = append(spans, span{e.Offsets[0], e.Offsets[1], name})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].b < spans[j].b })
	for i := 1; i < len(spans); i++ {
		if spans[i].b < spans[i-1].e {
			return nil, bad("tensors %q and %q overlap", spans[i-1].name, spans[i].name)
		}
	}
	return sf, nil
}

func (s *stFile) close() error {
	if s.unmap == nil {
		return nil
	}
	return s.unmap()
}
