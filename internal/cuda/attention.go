package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/raptor-infer/raptor/internal/status"
)

// Go launcher of the fused block-sparse attention kernel
// (kernels/sparse_attention.cu, its contract in sparse_attention.cuh). The
// kernel builds the attention plan and its work schedule on the GPU from
// cu_seqlens and the request seeds, so a call is two launches (one when the
// batch's schedule is reused from an earlier layer) and no host work beyond
// the parameter block. A sequence of n <= (5+2r)*64 tokens, or
// any sequence when Sparse is false, attends densely in the same launch.

// AttnBlock is the kernel's block size: sparse plans must use it.
const AttnBlock = 64

// AttnMaxRandom is the most random blocks the kernel supports.
const AttnMaxRandom = 16

// attnSplitBlocks is the split-KV chunk of global rows (key blocks), and
// attnOrder the schedule's order (sort_by_cost): 3 runs each sequence's work
// together, longest sequences first, with the global-row chunks of the last
// (SMs x 4) x C block steps moved ahead of them. Against C = 32 in cost order
// (the earlier default), on an H200 in interleaved rounds: -2.8%, -2.9%,
// -2.7%, -1.8% on the four workloads of bench/RESULTS.md, issue 6.
const (
	attnSplitBlocks = 64
	attnOrder       = 3
)

// AttnHeadDims lists the head dimensions the kernel is instantiated for.
var AttnHeadDims = []int{32, 64, 128}

// AttentionArgs describe one attention call over a packed batch. Strides
// are in elements; rows of one head are HeadDim contiguous 16-bit elements,
// pointers 16-byte aligned, strides multiples of 8.
type AttentionArgs struct {
	DType                      DType
	Q, K, V, O                 DevPtr
	QRow, KRow, VRow, ORow     int64
	QHead, KHead, VHead, OHead int64
	CuSeqlens                  DevPtr // int32[NSeq+1] on the device
	ReqSeeds                   DevPtr // uint64[NSeq] on the device, or 0 (all 0)
	Seed                       uint64 // the engine seed of the plan
	NSeq, Heads, HeadDim       int
	Tokens                     int // T = cu_seqlens[NSeq]; sizes the partials and the item records (at least the real T)
	Layer, RandomBlocks        int
	Sparse                     bool
	Scale                      float32 // 0: 1/sqrt(HeadDim)
	// Workspace holds AttnWorkspaceBytes(Tokens, NSeq, Heads, RecordSets)
	// bytes; Partial holds AttnPartialBytes(...) bytes when Sparse (0
	// otherwise). The schedule kernel initialises both: no memset is needed.
	Workspace, Partial DevPtr
	// RecordSets is what AttnRecordSets returned for the forward (0: none).
	// A call that schedules (ScheduleReady false) with RecordSets > 0 on the
	// wgmma kernel also builds the item records of layers 0 .. RecordSets-1
	// of a sparse model (one set, for every layer, of a dense one): the work
	// items' decode and key-block lists (kernels/sparse_attention.cu,
	// sparse_attention_items), which every later call on the schedule with
	// the same Seed and RandomBlocks reads instead of decoding its items
	// (2.5 to 4% faster on an H200, bench/RESULTS.md, issue 6). A call whose
	// layer has no records decodes its items itself.
	RecordSets int
	// ScheduleReady skips the schedule kernel: Workspace already holds the
	// schedule of this batch, left by an earlier call on the compute stream
	// with the same CuSeqlens and ReqSeeds (contents), NSeq, Heads,
	// RandomBlocks and Sparse, and nothing else wrote it since. The
	// schedule does not depend on the layer, the engine seed or Q/K/V, and
	// the attention kernels leave the workspace ready for the next call, so
	// a forward schedules once and every later layer sets this.
	ScheduleReady bool
}

// AttnWorkspaceBytes is the workspace of a call of T tokens in nseq
// sequences (kernels/sparse_attention.cuh, "Workspace layout": header,
// segments, partial-slot bases, semaphores, one segment-info record per
// segment from a 16-byte boundary, ws_ints; then, when recordSets > 0, from
// a 128-byte boundary, recordSets sets of item records of 128 bytes for each
// of at most items_bound(T, nseq, heads, C) tickets).
func AttnWorkspaceBytes(T, nseq, heads, recordSets int) int64 {
	n, h := int64(nseq), int64(heads)
	ints := ((16 + 17*n + 2*h*n + 3) &^ 3) + 16*n
	if recordSets > 0 {
		ints = (ints+31)&^31 + attnRecInts*attnItemsBound(T, nseq, heads)*int64(recordSets)
	}
	return 4 * ints
}

// attnItemsBound bounds the work items (tickets) of any batch of T tokens in
// nseq sequences (items_bound in kernels/sparse_attention.cuh): per sequence
// and head nb - 2 + 2*ceil(nb/C) <= nb + 2nb/C + 2, the nb summing to at most
// ceil(T/64) + nseq.
func attnItemsBound(T, nseq, heads int) int64 {
	n := int64(nseq)
	B := (int64(T)+AttnBlock-1)/AttnBlock + n
	return int64(heads) * (B + (2*B+attnSplitBlocks-1)/attnSplitBlocks + 2*n)
}

// attnRecInts is an item record's size in ints (kRecInts).
const attnRecInts = 32

// AttnRecordSets is the number of item-record sets a forward of layers
// attention layers should build on this device (AttentionArgs.RecordSets):
// layers for a sparse model, one for a dense one (its records do not depend
// on the layer), none where the kernel does not read them (the mma.sync
// kernel: not sm_90a, head dimension 32, or RAPTOR_ATTN_KERNEL=mma).
func AttnRecordSets(info Info, headDim, layers int, sparse bool) int {
	if !attnUsesWG(info, headDim) || layers <= 0 {
		return 0
	}
	if !sparse {
		return 1
	}
	return layers
}

// attnUsesWG says whether Attention runs the wgmma kernel for headDim here.
func attnUsesWG(info Info, headDim int) bool {
	return info.Arch == "sm_90a" && (headDim == 64 || headDim == 128) && !attnForceMMA
}

// AttnPartialBytes bounds the split-KV partials of a sparse call of T
// tokens in nseq sequences (partial_slots_bound * partial_slot_floats).
func AttnPartialBytes(T, nseq, heads, headDim int) int64 {
	C := int64(attnSplitBlocks)
	slots := 2 * int64(heads) * (((int64(T)+AttnBlock-1)/AttnBlock+int64(nseq))/C + int64(nseq))
	return 4 * max(1, slots) * (64*int64(headDim) + 128)
}

// attnSmem is the dynamic shared memory of the NST=2 mma.sync kernels.
func attnSmem(d int) int { return (1 + 2*2) * 64 * (d + 8) * 2 }

// attnSmemWG is the dynamic shared memory of the NST=2 wgmma kernels (the
// tiles unpadded, aligned to 1024 bytes inside it).
func attnSmemWG(d int) int { return (1+2*2)*64*d*2 + 1024 }

// attnForceMMA (RAPTOR_ATTN_KERNEL=mma) makes Attention use the mma.sync
// kernel on every device, for comparisons.
var attnForceMMA = os.Getenv("RAPTOR_ATTN_KERNEL") == "mma"

// attnKernel names the attention kernel for a head dimension and dtype on
// this device, with its dynamic shared memory: the wgmma kernel on sm_90a for
// D = 64 and 128 (1.4 to 1.5x the mma.sync kernel on an H100 on all four
// workloads of bench/RESULTS.md, issue 6), else the mma.sync kernel (sm_80
// and up, every D). RAPTOR_ATTN_KERNEL=mma forces the mma.sync kernel.
func (c *Ctx) attnKernel(d int, dt DType) (string, int) {
	if attnUsesWG(c.info, d) {
		return fmt.Sprintf("sparse_attention_d%d_wg_%s", d, dt), attnSmemWG(d)
	}
	return fmt.Sprintf("sparse_attention_d%d_%s", d, dt), attnSmem(d)
}

// Attention enqueues the schedule kernel (unless a.ScheduleReady) and the
// attention kernel of a on the compute stream.
func (c *Ctx) Attention(a AttentionArgs) error {
	const op = "Attention"
	if err := checkDType16(op, a.DType); err != nil {
		return err
	}
	okD := false
	for _, d := range AttnHeadDims {
		okD = okD || d == a.HeadDim
	}
	if !okD {
		return status.Errorf(status.Unsupported, "cuda: attention head dimension %d (the kernel has %v)", a.HeadDim, AttnHeadDims)
	}
	if a.RandomBlocks < 0 || a.RandomBlocks > AttnMaxRandom {
		return status.Errorf(status.Unsupported, "cuda: attention with %d random blocks (at most %d)", a.RandomBlocks, AttnMaxRandom)
	}
	if a.NSeq <= 0 || a.Heads <= 0 {
		return nil
	}
	if err := checkNonNull(op, a.Q, a.K, a.V, a.O, a.CuSeqlens, a.Workspace); err != nil {
		return err
	}
	if a.Sparse {
		if err := checkNonNull(op, a.Partial); err != nil {
			return err
		}
	}
	if err := checkAligned(op, 16, a.Q, a.K, a.V, a.O); err != nil {
		return err
	}
	for _, s := range []int64{a.QRow, a.KRow, a.VRow, a.ORow, a.QHead, a.KHead, a.VHead, a.OHead} {
		if s%8 != 0 || s <= 0 {
			return status.Errorf(status.InvalidArgument, "cuda: %s: stride %d is not a positive multiple of 8", op, s)
		}
	}
	scale := a.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
	}
	p := make([]byte, 168)
	le := binary.LittleEndian
	for i, v := range []uint64{uint64(a.Q), uint64(a.K), uint64(a.V), uint64(a.O),
		uint64(a.QRow), uint64(a.KRow), uint64(a.VRow), uint64(a.ORow),
		uint64(a.QHead), uint64(a.KHead), uint64(a.VHead), uint64(a.OHead),
		uint64(a.CuSeqlens), uint64(a.ReqSeeds), a.Seed, uint64(a.Workspace), uint64(a.Partial)} {
		le.PutUint64(p[8*i:], v)
	}
	sparse := int32(0)
	if a.Sparse {
		sparse = 1
	}
	for i, v := range []int32{int32(a.NSeq), int32(a.Heads), int32(a.Layer), int32(a.RandomBlocks), sparse, attnSplitBlocks, attnOrder} {
		le.PutUint32(p[136+4*i:], uint32(v))
	}
	le.PutUint32(p[164:], math.Float32bits(scale))

	if !a.ScheduleReady {
		sched, err := c.Function("sparse_attention", "sparse_attention_schedule")
		if err != nil {
			return err
		}
		if err := c.Launch(sched, D1(1), D1(1024), 0, c.compute, RawArg(p)); err != nil {
			return err
		}
		if a.RecordSets > 0 && attnUsesWG(c.info, a.HeadDim) {
			items, err := c.Function("sparse_attention", "sparse_attention_items")
			if err != nil {
				return err
			}
			bound := min(attnItemsBound(a.Tokens, a.NSeq, a.Heads), math.MaxInt32-127)
			sets := 1 // a dense model's records serve every layer
			if a.Sparse {
				sets = a.RecordSets
			}
			grid := Dim3{uint32((bound + 127) / 128), uint32(sets), 1}
			if err := c.Launch(items, grid, D1(128), 0, c.compute, RawArg(p), int32(a.RecordSets), int32(bound)); err != nil {
				return err
			}
		}
	}
	name, smem := c.attnKernel(a.HeadDim, a.DType)
	f, err := c.Function("sparse_attention", name)
	if err != nil {
		return err
	}
	grid, err := c.attnGrid(f, smem)
	if err != nil {
		return err
	}
	return c.Launch(f, D1(grid), D1(128), uint32(smem), c.compute, RawArg(p))
}

// attnGrid sets f's dynamic shared memory limit (once) and returns its
// persistent grid: SMs x resident CTAs per SM.
func (c *Ctx) attnGrid(f *Function, smem int) (int, error) {
	if f.grid > 0 {
		return f.grid, nil
	}
	if smem > 48<<10 {
		if err := c.drv.check("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", c.drv.cuFuncSetAttribute(f.handle, funcAttrMaxDynSmem, int32(smem))); err != nil {
			return 0, err
		}
	}
	occ, err := c.Occupancy(f, 128, smem)
	if err != nil {
		return 0, err
	}
	f.grid = c.info.SMs * max(occ, 1)
	return f.grid, nil
}

// AttentionKernelNames lists the kernels Attention may launch (on some
// device).
func AttentionKernelNames() []string {
	out := []string{"sparse_attention_schedule", "sparse_attention_items"}
	for _, dt := range []DType{F16, BF16} {
		for _, d := range AttnHeadDims {
			out = append(out, fmt.Sprintf("sparse_attention_d%d_%s", d, dt))
			if d == 64 || d == 128 {
				out = append(out, fmt.Sprintf("sparse_attention_d%d_wg_%s", d, dt))
			}
		}
	}
	return out
}
