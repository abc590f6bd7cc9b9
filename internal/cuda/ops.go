package cuda

import (
	"fmt"

	"github.com/raptor-infer/raptor/internal/status"
)

// Typed launchers of the embedded kernels (kernels/*.cu). Each validates its
// arguments (a bad one is an InvalidArgument *status.Error, never a device
// fault) and enqueues on the compute stream.

// MaxLayerNormCols is the widest row the LayerNorm kernels take.
const MaxLayerNormCols = 4096

var lnVariants = []int{1, 2, 3, 4, 6, 8, 12, 16}

// lnVariant picks the instantiation whose lanes hold a whole row.
func lnVariant(cols int) (int, error) {
	if cols <= 0 || cols%8 != 0 || cols > MaxLayerNormCols {
		return 0, status.Errorf(status.InvalidArgument, "cuda: LayerNorm width %d (need a positive multiple of 8, at most %d)", cols, MaxLayerNormCols)
	}
	need := (cols + 255) / 256
	for _, v := range lnVariants {
		if v >= need {
			return v, nil
		}
	}
	panic("unreachable")
}

func checkDType16(op string, dt DType) error {
	if dt != F16 && dt != BF16 {
		return status.Errorf(status.InvalidArgument, "cuda: %s needs f16 or bf16, got %s", op, dt)
	}
	return nil
}

func checkAligned(op string, align uintptr, ptrs ...DevPtr) error {
	for _, p := range ptrs {
		if uintptr(p)%align != 0 {
			return status.Errorf(status.InvalidArgument, "cuda: %s: pointer %#x is not %d-byte aligned", op, uintptr(p), align)
		}
	}
	return nil
}

func checkNonNull(op string, ptrs ...DevPtr) error {
	for _, p := range ptrs {
		if p == 0 {
			return status.Errorf(status.InvalidArgument, "cuda: %s: null pointer", op)
		}
	}
	return nil
}

// AddLayerNorm enqueues out[r] = LayerNorm(x[r] + residual[r] + bias) *
// gamma + beta for rows of cols elements, with fp32 statistics. residual and
// bias may be 0; out may alias x or residual. cols must be a multiple of 8,
// at most MaxLayerNormCols; pointers 16-byte aligned.
func (c *Ctx) AddLayerNorm(dt DType, out, x, residual, bias, gamma, beta DevPtr, rows, cols int, eps float32) error {
	const op = "AddLayerNorm"
	if err := checkDType16(op, dt); err != nil {
		return err
	}
	v, err := lnVariant(cols)
	if err != nil {
		return err
	}
	if err := checkNonNull(op, out, x, gamma, beta); err != nil {
		return err
	}
	if err := checkAligned(op, 16, out, x, residual, bias, gamma, beta); err != nil {
		return err
	}
	if rows <= 0 {
		return nil
	}
	f, err := c.Function("layernorm", fmt.Sprintf("add_ln_%s_v%d", dt, v))
	if err != nil {
		return err
	}
	return c.Launch(f, D1((rows+3)/4), D1(128), 0, c.compute, out, x, residual, bias, gamma, beta, int32(rows), int32(cols), eps)
}

// EmbedArgs describe an embedding gather followed by LayerNorm:
// Out[r] = LayerNorm(Word[IDs[r]] + Pos[PosIDs[r]] + Type[TypeIDs[r]]) *
// Gamma + Beta. Tables are [rows of the table, Cols] in DType; ids int32.
type EmbedArgs struct {
	DType                DType
	Out                  DevPtr
	IDs, PosIDs, TypeIDs DevPtr // PosIDs 0: no position embedding; TypeIDs 0: token type 0
	Word, Pos, Type      DevPtr // Type 0: no token-type embedding
	Gamma, Beta          DevPtr
	Rows, Cols           int
	Vocab, NPos, NType   int
	Eps                  float32
	// Err, if not 0, is an int32 in device memory the kernel ORs a flag
	// into for each id outside its table (1 word, 2 position, 4 type); such
	// rows are written as zeros. The caller zeroes it beforehand.
	Err DevPtr
}

// EmbedLayerNorm enqueues the embedding gather + LayerNorm of a.
func (c *Ctx) EmbedLayerNorm(a EmbedArgs) error {
	const op = "EmbedLayerNorm"
	if err := checkDType16(op, a.DType); err != nil {
		return err
	}
	v, err := lnVariant(a.Cols)
	if err != nil {
		return err
	}
	if err := checkNonNull(op, a.Out, a.IDs, a.Word, a.Gamma, a.Beta); err != nil {
		return err
	}
	if a.PosIDs != 0 && a.Pos == 0 {
		return status.Errorf(status.InvalidArgument, "cuda: %s: position ids without a position table", op)
	}
	if err := checkAligned(op, 16, a.Out, a.Word, a.Pos, a.Type, a.Gamma, a.Beta); err != nil {
		return err
	}
	if err := checkAligned(op, 4, a.IDs, a.PosIDs, a.TypeIDs, a.Err); err != nil {
		return err
	}
	if a.Rows <= 0 {
		return nil
	}
	f, err := c.Function("layernorm", fmt.Sprintf("embed_ln_%s_v%d", a.DType, v))
	if err != nil {
		return err
	}
	return c.Launch(f, D1((a.Rows+3)/4), D1(128), 0, c.compute,
		a.Out, a.IDs, a.PosIDs, a.TypeIDs, a.Word, a.Pos, a.Type, a.Gamma, a.Beta,
		int32(a.Rows), int32(a.Cols), int32(a.Vocab), int32(a.NPos), int32(a.NType), a.Eps, a.Err)
}

// gridFor sizes a grid-stride launch of n work items at 256 threads a
// block: enough blocks to fill the device several times over, no more.
func (c *Ctx) gridFor(n int64) int {
	blocks := (n + 255) / 256
	if lim := int64(c.info.SMs * 16); blocks > lim {
		blocks = lim
	}
	return int(max(blocks, 1))
}

// BiasGELU enqueues out = gelu(x + bias) over rows x cols (bias [cols], may
// be 0), with the exact erf GELU or, if tanh, the tanh approximation. out
// may alias x. cols must be a multiple of 8; pointers 16-byte aligned.
func (c *Ctx) BiasGELU(dt DType, out, x, bias DevPtr, rows, cols int, tanh bool) error {
	const op = "BiasGELU"
	if err := checkDType16(op, dt); err != nil {
		return err
	}
	if cols <= 0 || cols%8 != 0 {
		return status.Errorf(status.InvalidArgument, "cuda: %s width %d (need a positive multiple of 8)", op, cols)
	}
	if err := checkNonNull(op, out, x); err != nil {
		return err
	}
	if err := checkAligned(op, 16, out, x, bias); err != nil {
		return err
	}
	n := int64(rows) * int64(cols)
	if n <= 0 {
		return nil
	}
	kind := "erf"
	if tanh {
		kind = "tanh"
	}
	return c.BiasGELUKernel(kind, dt, out, x, bias, rows, cols)
}

// BiasGELUKernel is BiasGELU with the kernel named: "erf" (exact, erff)
// or "tanh". Arguments as BiasGELU's (checked there).
func (c *Ctx) BiasGELUKernel(kind string, dt DType, out, x, bias DevPtr, rows, cols int) error {
	n := int64(rows) * int64(cols)
	if n <= 0 || cols <= 0 || cols%8 != 0 {
		return status.Errorf(status.InvalidArgument, "cuda: BiasGELU %dx%d", rows, cols)
	}
	f, err := c.Function("activation", fmt.Sprintf("bias_gelu_%s_%s", kind, dt))
	if err != nil {
		return err
	}
	return c.Launch(f, D1(c.gridFor(n/8)), D1(256), 0, c.compute, out, x, bias, n, int32(cols))
}

// rowArgs checks the arguments every row-moving op shares (rows a positive
// multiple of 16 bytes, no null pointer, dst and src 16-byte aligned) and
// returns the row length in 16-byte vectors.
func rowArgs(op string, rowBytes int, dst, src, index DevPtr) (int32, error) {
	if rowBytes <= 0 || rowBytes%16 != 0 {
		return 0, status.Errorf(status.InvalidArgument, "cuda: %s: row of %d bytes (need a positive multiple of 16)", op, rowBytes)
	}
	if err := checkNonNull(op, dst, src, index); err != nil {
		return 0, err
	}
	if err := checkAligned(op, 16, dst, src); err != nil {
		return 0, err
	}
	return int32(rowBytes / 16), nil
}

// PackRows enqueues dst[t] = src[b*S + (t - cu[b])] for the total rows of a
// packed batch: the padded [batch, S, row] src becomes the packed
// [total, row] dst. cuSeqlens is int32[batch+1] in device memory. Rows are
// rowBytes long (a multiple of 16); buffers 16-byte aligned.
func (c *Ctx) PackRows(dst, src, cuSeqlens DevPtr, batch, S, total, rowBytes int) error {
	const op = "PackRows"
	vecs, err := rowArgs(op, rowBytes, dst, src, cuSeqlens)
	if err != nil {
		return err
	}
	if total <= 0 || batch <= 0 {
		return nil
	}
	f, err := c.Function("pack", "pack_rows")
	if err != nil {
		return err
	}
	return c.Launch(f, D1((total+3)/4), D1(128), 0, c.compute, dst, src, cuSeqlens, int32(batch), int32(S), int32(total), vecs)
}

// UnpackRows enqueues the inverse of PackRows: dst [batch, S, row] gets each
// sequence's rows from the packed src and zeros past its length.
func (c *Ctx) UnpackRows(dst, src, cuSeqlens DevPtr, batch, S, rowBytes int) error {
	const op = "UnpackRows"
	vecs, err := rowArgs(op, rowBytes, dst, src, cuSeqlens)
	if err != nil {
		return err
	}
	rows := int64(batch) * int64(S)
	if rows <= 0 {
		return nil
	}
	f, err := c.Function("pack", "unpack_rows")
	if err != nil {
		return err
	}
	return c.Launch(f, D1(int((rows+3)/4)), D1(128), 0, c.compute, dst, src, cuSeqlens, int32(batch), int32(S), vecs)
}

// GatherRows enqueues dst[i] = src[idx[i]] for i < n (idx int32 in device
// memory; an index outside [0, nsrc) gives a zero row).
func (c *Ctx) GatherRows(dst, src, idx DevPtr, n, nsrc, rowBytes int) error {
	const op = "GatherRows"
	vecs, err := rowArgs(op, rowBytes, dst, src, idx)
	if err != nil {
		return err
	}
	if n <= 0 {
		return nil
	}
	f, err := c.Function("pack", "gather_rows")
	if err != nil {
		return err
	}
	return c.Launch(f, D1((n+3)/4), D1(128), 0, c.compute, dst, src, idx, int32(n), int32(nsrc), vecs)
}

// MeanPool enqueues out[b] = mean of the rows of sequence b of the packed
// src (fp32 out [batch, cols]; 0 for an empty sequence).
func (c *Ctx) MeanPool(dt DType, out, src, cuSeqlens DevPtr, batch, cols int) error {
	const op = "MeanPool"
	if err := checkDType16(op, dt); err != nil {
		return err
	}
	if err := checkNonNull(op, out, src, cuSeqlens); err != nil {
		return err
	}
	if batch <= 0 || cols <= 0 {
		return nil
	}
	f, err := c.Function("pack", "mean_pool_"+dt.String())
	if err != nil {
		return err
	}
	return c.Launch(f, Dim3{uint32(batch), uint32((cols + 255) / 256), 1}, D1(256), 0, c.compute, out, src, cuSeqlens, int32(cols))
}

// Convert enqueues dst = src converted element-wise for n elements, between
// F32 and F16 or BF16 (round to nearest even).
func (c *Ctx) Convert(dstType DType, dst DevPtr, srcType DType, src DevPtr, n int64) error {
	var name string
	switch {
	case srcType == F32 && (dstType == F16 || dstType == BF16):
		name = "f32_to_" + dstType.String()
	case dstType == F32 && (srcType == F16 || srcType == BF16):
		name = srcType.String() + "_to_f32"
	default:
		return status.Errorf(status.InvalidArgument, "cuda: Convert from %s to %s", srcType, dstType)
	}
	if err := checkNonNull("Convert", dst, src); err != nil {
		return err
	}
	if n <= 0 {
		return nil
	}
	f, err := c.Function("convert", name)
	if err != nil {
		return err
	}
	return c.Launch(f, D1(c.gridFor(n)), D1(256), 0, c.compute, dst, src, n)
}

// FillUniform enqueues dst[i] = lo + (hi-lo) u(seed, i) for n elements of
// dt, u a counter-based uniform draw in [0, 1) (splitmix64 of seed and i;
// see kernels/convert.cu), rounded to dt. For tests and benchmarks.
func (c *Ctx) FillUniform(dt DType, dst DevPtr, n int64, seed uint64, lo, hi float32) error {
	if err := checkNonNull("FillUniform", dst); err != nil {
		return err
	}
	if n <= 0 {
		return nil
	}
	f, err := c.Function("convert", "fill_uniform_"+dt.String())
	if err != nil {
		return err
	}
	return c.Launch(f, D1(c.gridFor(n)), D1(256), 0, c.compute, dst, n, seed, lo, hi)
}

// KernelNames lists, per module, every kernel the launchers of this file
// use; the compile check verifies each exists in its compiled module.
func KernelNames() map[string][]string {
	out := map[string][]string{}
	for _, dt := range []DType{F16, BF16} {
		for _, v := range lnVariants {
			out["layernorm"] = append(out["layernorm"], fmt.Sprintf("add_ln_%s_v%d", dt, v), fmt.Sprintf("embed_ln_%s_v%d", dt, v))
		}
		out["activation"] = append(out["activation"], "bias_gelu_erf_"+dt.String(), "bias_gelu_tanh_"+dt.String())
		out["pack"] = append(out["pack"], "mean_pool_"+dt.String())
		out["convert"] = append(out["convert"], "f32_to_"+dt.String(), dt.String()+"_to_f32", "fill_uniform_"+dt.String())
	}
	out["pack"] = append(out["pack"], "pack_rows", "unpack_rows", "gather_rows")
	out["convert"] = append(out["convert"], "fill_uniform_f32")
	out["encoder"] = []string{"finish_rows_f16", "finish_rows_bf16", "finish_rows_f32"}
	out["sparse_attention"] = AttentionKernelNames()
	return out
}

// FinishRows enqueues out[r] = f(src[idx[r]]) for r < rows (idx 0: src[r]),
// out fp32 [rows, cols]: f applies tanh element-wise if tanh, then divides
// the row by max(||row||, 1e-12) if normalize. src is F16, BF16 or F32. It
// finishes pooled outputs: CLS rows (idx = cu_seqlens), the pooler's tanh,
// L2 normalisation.
func (c *Ctx) FinishRows(dt DType, out, src, idx DevPtr, rows, cols int, tanh, normalize bool) error {
	const op = "FinishRows"
	if dt != F16 && dt != BF16 && dt != F32 {
		return status.Errorf(status.InvalidArgument, "cuda: %s of %s", op, dt)
	}
	if err := checkNonNull(op, out, src); err != nil {
		return err
	}
	if rows <= 0 || cols <= 0 {
		return nil
	}
	f, err := c.Function("encoder", "finish_rows_"+dt.String())
	if err != nil {
		return err
	}
	b := func(v bool) int32 {
		if v {
			return 1
		}
		return 0
	}
	return c.Launch(f, D1(rows), D1(256), 0, c.compute, out, src, idx, int32(cols), b(tanh), b(normalize))
}
