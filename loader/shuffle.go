package loader

// shuffle writes the byte planes of src into dst: byte 0 of every element,
// then byte 1 of every element, and so on (Blosc's shuffle filter). For
// float16/bfloat16 weights the high bytes (sign, exponent) are far more
// repetitive than the low bytes, so grouping them helps zstd.
// len(src) must be a multiple of size; len(dst) == len(src).
func shuffle(dst, src []byte, size int) {
	n := len(src) / size
	switch size {
	case 2:
		lo, hi := dst[:n], dst[n:2*n]
		for i := 0; i < n; i++ {
			lo[i] = src[2*i]
			hi[i] = src[2*i+1]
		}
	case 4:
		p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
		for i := 0; i < n; i++ {
			s := src[4*i : 4*i+4]
			p0[i], p1[i], p2[i], p3[i] = s[0], s[1], s[2], s[3]
		}
	default:
		for p := 0; p < size; p++ {
			for i := 0; i < n; i++ {
				dst[p*n+i] = src[i*size+p]
			}
		}
	}
}

// unshuffle inverts shuffle.
func unshuffle(dst, src []byte, size int) {
	n := len(src) / size
	switch size {
	case 2:
		lo, hi := src[:n], src[n:2*n]
		for i := 0; i < n; i++ {
			dst[2*i] = lo[i]
			dst[2*i+1] = hi[i]
		}
	case 4:
		p0, p1, p2, p3 := src[:n], src[n:2*n], src[2*n:3*n], src[3*n:4*n]
		for i := 0; i < n; i++ {
			d := dst[4*i : 4*i+4]
			d[0], d[1], d[2], d[3] = p0[i], p1[i], p2[i], p3[i]
		}
	default:
		for p := 0; p < size; p++ {
			for i := 0; i < n; i++ {
				dst[i*size+p] = src[p*n+i]
			}
		}
	}
}
