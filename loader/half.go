package loader

import (
	"math"
	"sync"
)

// F16ToF32 converts an IEEE 754 binary16 value (given as its bits) to float32.
// The conversion is exact: every binary16 value, subnormals, infinities and
// NaN payloads included, is representable in float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN; the payload moves to the top of the f32 mantissa
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: normalise.
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToF16 converts a float32 to IEEE 754 binary16 bits, rounding to nearest
// with ties to even (as numpy and torch do). Values beyond the binary16 range
// become infinities; NaNs stay NaNs (quiet, with the top of their payload).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// The result is a binary16 subnormal (or zero): value = q * 2^-24.
		shift := uint(14 - e)
		if shift > 24 {
			return sign
		}
		full := mant | 0x800000
		q := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && q&1 == 1) {
			q++ // may carry into the smallest normal, which is the right encoding
		}
		return sign | uint16(q)
	}
	q := mant >> 13
	rem := mant & 0x1fff
	h := uint32(e)<<10 | q
	if rem > 0x1000 || (rem == 0x1000 && q&1 == 1) {
		h++ // may carry into the exponent, up to infinity: the right encoding
	}
	return sign | uint16(h)
}

// BF16ToF32 converts bfloat16 bits to float32 (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts a float32 to bfloat16 bits, rounding to nearest with
// ties to even (as torch does). NaNs stay quiet NaNs.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

var (
	f16TableOnce sync.Once
	f16Table     []float32 // all 65536 binary16 values as float32
)

func f16ToF32Table() []float32 {
	f16TableOnce.Do(func() {
		f16Table = make([]float32, 1<<16)
		for i := range f16Table {
			f16Table[i] = F16ToF32(uint16(i))
		}
	})
	return f16Table
}

// decodeF32 converts little-endian raw elements of dtype d into dst
// (len(dst) elements; raw holds exactly len(dst)*d.Size() bytes).
func decodeF32(dst []float32, raw []byte, d DType) {
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
	case F16:
		t := f16ToF32Table()
		for i := range dst {
			dst[i] = t[uint16(raw[2*i])|uint16(raw[2*i+1])<<8]
		}
	case BF16:
		for i := range dst {
			dst[i] = math.Float32frombits((uint32(raw[2*i]) | uint32(raw[2*i+1])<<8) << 16)
		}
	}
}

// encodeF32 converts src to little-endian raw elements of dtype d, appended
// to dst. It returns the new slice and the number of finite values that
// overflowed to infinity (binary16 only).
func encodeF32(dst []byte, src []float32, d DType) ([]byte, int) {
	overflow := 0
	switch d {
	case F32:
		for _, v := range src {
			b := math.Float32bits(v)
			dst = append(dst, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
		}
	case F16:
		for _, v := range src {
			h := F32ToF16(v)
			if h&0x7fff == 0x7c00 && !math.IsInf(float64(v), 0) {
				overflow++
			}
			dst = append(dst, byte(h), byte(h>>8))
		}
	case BF16:
		for _, v := range src {
			h := F32ToBF16(v)
			if h&0x7fff == 0x7f80 && !math.IsInf(float64(v), 0) {
				overflow++
			}
			dst = append(dst, byte(h), byte(h>>8))
		}
	}
	return dst, overflow
}
