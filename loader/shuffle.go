package loader

import "encoding/binary"

// shuffle writes the byte planes of src into dst: byte 0 of every element,
// then byte 1 of every element, and so on (Blosc's shuffle filter). For
// float weights the high bytes (sign, exponent) are far more repetitive
// than the low bytes, so grouping them helps zstd.
// len(src) must be a multiple of size; len(dst) == len(src).
func shuffle(dst, src []byte, size int) {
	n := len(src) / size
	i := 0
	switch size {
	case 2:
		lo, hi := dst[:n], dst[n:2*n]
		for ; i+4 <= n; i += 4 {
			x := binary.LittleEndian.Uint64(src[2*i:])
			binary.LittleEndian.PutUint32(lo[i:], gather2(x))
			binary.LittleEndian.PutUint32(hi[i:], gather2(x>>8))
		}
	case 4:
		p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
		for ; i+2 <= n; i += 2 {
			x := binary.LittleEndian.Uint64(src[4*i:])
			binary.LittleEndian.PutUint16(p0[i:], gather4(x))
			binary.LittleEndian.PutUint16(p1[i:], gather4(x>>8))
			binary.LittleEndian.PutUint16(p2[i:], gather4(x>>16))
			binary.LittleEndian.PutUint16(p3[i:], gather4(x>>24))
		}
	}
	for ; i < n; i++ { // the tail, and sizes without a fast path
		for p := 0; p < size; p++ {
			dst[p*n+i] = src[i*size+p]
		}
	}
}

// unshuffle inverts shuffle.
func unshuffle(dst, src []byte, size int) {
	n := len(src) / size
	i := 0
	switch size {
	case 2:
		lo, hi := src[:n], src[n:2*n]
		for ; i+8 <= n; i += 8 {
			l := binary.LittleEndian.Uint64(lo[i:])
			h := binary.LittleEndian.Uint64(hi[i:])
			binary.LittleEndian.PutUint64(dst[2*i:], spread2(uint32(l))|spread2(uint32(h))<<8)
			binary.LittleEndian.PutUint64(dst[2*i+8:], spread2(uint32(l>>32))|spread2(uint32(h>>32))<<8)
		}
	case 4:
		p0, p1, p2, p3 := src[:n], src[n:2*n], src[2*n:3*n], src[3*n:4*n]
		for ; i+8 <= n; i += 8 {
			a := binary.LittleEndian.Uint64(p0[i:])
			b := binary.LittleEndian.Uint64(p1[i:])
			c := binary.LittleEndian.Uint64(p2[i:])
			d := binary.LittleEndian.Uint64(p3[i:])
			for k := 0; k < 4; k++ {
				s := 16 * uint(k)
				binary.LittleEndian.PutUint64(dst[4*i+8*k:],
					spread4(uint16(a>>s))|spread4(uint16(b>>s))<<8|spread4(uint16(c>>s))<<16|spread4(uint16(d>>s))<<24)
			}
		}
	}
	for ; i < n; i++ {
		for p := 0; p < size; p++ {
			dst[i*size+p] = src[p*n+i]
		}
	}
}

// spread2 moves byte j of x to byte 2j of the result.
func spread2(x uint32) uint64 {
	v := uint64(x)
	v = (v | v<<16) & 0x0000ffff0000ffff
	return (v | v<<8) & 0x00ff00ff00ff00ff
}

// gather2 is the inverse of spread2: byte 2j of x to byte j.
func gather2(x uint64) uint32 {
	x &= 0x00ff00ff00ff00ff
	x = (x | x>>8) & 0x0000ffff0000ffff
	return uint32(x | x>>16)
}

// spread4 moves byte j of x to byte 4j of the result.
func spread4(x uint16) uint64 {
	v := uint64(x)
	return (v | v<<24) & 0x000000ff000000ff
}

// gather4 is the inverse of spread4: byte 4j of x to byte j.
func gather4(x uint64) uint16 {
	x &= 0x000000ff000000ff
	return uint16(x | x>>24)
}
