package loader

import (
	"encoding/binary"
	"fmt"
)

// Go's flatbuffers runtime reads whatever offsets a buffer holds, with no
// bounds checks. This file is the verifier it lacks: before any generated
// accessor touches a header, verifyHeader walks every table, vtable, vector
// and string reachable from the root and checks that each offset, length and
// field lies inside the buffer. The specs below mirror loader/schema/raptor.fbs
// (field i is slot i); TestVerifierSpecsMatchSchema keeps them in sync.

type fieldKind uint8

const (
	fScalar    fieldKind = iota // inline scalar of size bytes
	fString                     // offset to a string
	fVector                     // offset to a vector of size-byte scalars
	fStrings                    // offset to a vector of strings
	fTable                      // offset to a table of type sub
	fTableList                  // offset to a vector of tables of type sub
)

type fieldSpec struct {
	name     string
	kind     fieldKind
	size     int        // scalar or vector element size
	sub      *tableSpec // fTable, fTableList
	required bool
}

type tableSpec struct {
	name   string
	fields []fieldSpec
}

func scalar(name string, size int) fieldSpec { return fieldSpec{name: name, kind: fScalar, size: size} }

var (
	configSpec = &tableSpec{"Config", []fieldSpec{
		scalar("family", 1), scalar("vocab_size", 4), scalar("hidden_size", 4), scalar("num_layers", 4),
		scalar("num_heads", 4), scalar("intermediate_size", 4), scalar("max_positions", 4),
		scalar("type_vocab_size", 4), scalar("layer_norm_eps", 4), scalar("activation", 1),
		scalar("position_offset", 4), scalar("pad_token_id", 4), scalar("attention", 1),
		scalar("block_size", 4), scalar("random_blocks", 4), scalar("pooler", 1), scalar("dtype", 1),
	}}
	tokenizerSpec = &tableSpec{"Tokenizer", []fieldSpec{
		{name: "vocab", kind: fStrings},
		scalar("lowercase", 1), scalar("strip_accents", 1), scalar("cls_id", 4), scalar("sep_id", 4),
		scalar("pad_id", 4), scalar("unk_id", 4), scalar("mask_id", 4), scalar("max_length", 4),
	}}
	tensorSpec = &tableSpec{"Tensor", []fieldSpec{
		{name: "name", kind: fString, required: true},
		scalar("dtype", 1),
		{name: "shape", kind: fVector, size: 8},
		scalar("offset", 8), scalar("length", 8), scalar("codec", 1), scalar("raw_size", 8),
		{name: "chunk_lengths", kind: fVector, size: 4},
		{name: "chunk_crc32c", kind: fVector, size: 4},
	}}
	modelSpec = &tableSpec{"Model", []fieldSpec{
		scalar("format_version", 4),
		{name: "config", kind: fTable, sub: configSpec, required: true},
		{name: "tokenizer", kind: fTable, sub: tokenizerSpec},
		scalar("chunk_size", 4), scalar("data_offset", 8), scalar("data_size", 8),
		{name: "tensors", kind: fTableList, sub: tensorSpec, required: true},
		{name: "producer", kind: fString},
		{name: "head", kind: fTable, sub: headSpec},
	}}
	headSpec = &tableSpec{"Head", []fieldSpec{
		scalar("kind", 1), scalar("variant", 1), scalar("num_labels", 4),
		{name: "labels", kind: fStrings}, scalar("question_sep_id", 4),
	}}
)

type verifier struct{ buf []byte }

func (v *verifier) errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

func (v *verifier) u16(at uint64) uint64 { return uint64(binary.LittleEndian.Uint16(v.buf[at:])) }
func (v *verifier) u32(at uint64) uint64 { return uint64(binary.LittleEndian.Uint32(v.buf[at:])) }

// in reports whether [at, at+n) lies inside the buffer.
func (v *verifier) in(at, n uint64) bool {
	return at <= uint64(len(v.buf)) && n <= uint64(len(v.buf))-at
}

// verifyHeader checks the structure of a header flatbuffer (the root offset,
// the identifier and everything reachable from the root Model table).
func verifyHeader(buf []byte) error {
	v := &verifier{buf: buf}
	if !v.in(0, 8) {
		return fmt.Errorf("header of %d bytes is shorter than a flatbuffer's root offset and identifier", len(buf))
	}
	return v.indirectTable(0, modelSpec, "Model")
}

// indirectTable follows the uoffset stored at at and verifies the table there.
func (v *verifier) indirectTable(at uint64, spec *tableSpec, path string) error {
	if !v.in(at, 4) {
		return v.errorf(path, "offset field at %d is outside the header", at)
	}
	pos := at + v.u32(at)
	return v.table(pos, spec, path)
}

func (v *verifier) table(pos uint64, spec *tableSpec, path string) error {
	if !v.in(pos, 4) {
		return v.errorf(path, "table at %d is outside the header (%d bytes)", pos, len(v.buf))
	}
	vt := int64(pos) - int64(int32(binary.LittleEndian.Uint32(v.buf[pos:])))
	if vt < 0 || !v.in(uint64(vt), 4) {
		return v.errorf(path, "vtable at %d is outside the header", vt)
	}
	vtab := uint64(vt)
	vtSize, tSize := v.u16(vtab), v.u16(vtab+2)
	if vtSize < 4 || vtSize%2 != 0 || !v.in(vtab, vtSize) {
		return v.errorf(path, "vtable at %d has a bad size %d", vtab, vtSize)
	}
	if tSize < 4 || !v.in(pos, tSize) {
		return v.errorf(path, "table at %d has a bad size %d", pos, tSize)
	}
	for i, f := range spec.fields {
		slot := 4 + 2*uint64(i)
		var fo uint64
		if slot+2 <= vtSize {
			fo = v.u16(vtab + slot)
		}
		fpath := path + "." + f.name
		if fo == 0 {
			if f.required {
				return v.errorf(fpath, "required field is missing")
			}
			continue
		}
		size := uint64(4) // every non-scalar field is a uoffset
		if f.kind == fScalar {
			size = uint64(f.size)
		}
		if fo < 4 || fo+size > tSize {
			return v.errorf(fpath, "field offset %d (size %d) is outside its table of %d bytes", fo, size, tSize)
		}
		at := pos + fo
		switch f.kind {
		case fScalar:
		case fString:
			if err := v.str(at, fpath); err != nil {
				return err
			}
		case fVector:
			if _, _, err := v.vector(at, uint64(f.size), fpath); err != nil {
				return err
			}
		case fStrings:
			start, n, err := v.vector(at, 4, fpath)
			if err != nil {
				return err
			}
			for j := uint64(0); j < n; j++ {
				if err := v.str(start+4*j, fmt.Sprintf("%s[%d]", fpath, j)); err != nil {
					return err
				}
			}
		case fTable:
			if err := v.indirectTable(at, f.sub, fpath); err != nil {
				return err
			}
		case fTableList:
			start, n, err := v.vector(at, 4, fpath)
			if err != nil {
				return err
			}
			for j := uint64(0); j < n; j++ {
				if err := v.indirectTable(start+4*j, f.sub, fmt.Sprintf("%s[%d]", fpath, j)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// vector verifies the vector whose uoffset is stored at at and returns the
// position of its first element and its length.
func (v *verifier) vector(at, elem uint64, path string) (start, n uint64, err error) {
	p := at + v.u32(at)
	if !v.in(p, 4) {
		return 0, 0, v.errorf(path, "vector at %d is outside the header", p)
	}
	n = v.u32(p)
	if !v.in(p+4, n*elem) { // n < 2^32 and elem <= 8: no overflow
		return 0, 0, v.errorf(path, "vector of %d elements at %d runs past the end of the header", n, p)
	}
	return p + 4, n, nil
}

func (v *verifier) str(at uint64, path string) error {
	start, n, err := v.vector(at, 1, path)
	if err != nil {
		return err
	}
	if !v.in(start+n, 1) || v.buf[start+n] != 0 {
		return v.errorf(path, "string is not NUL-terminated")
	}
	return nil
}
