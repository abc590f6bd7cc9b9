"""Python launcher of kernels/sparse_attention.cu for tests and benchmarks on
the GPU machine: the CUDA driver API through ctypes (the same calls the Go
engine makes through purego), the parameter block as a ctypes Structure that
mirrors raptor::sparse::AttnParams, tensors from torch on torch's current
stream.

The module is loaded from a carried cubin (compiled on the development
machine by nvrtc.py) or, if that does not load, compiled here with NVRTC."""
import ctypes
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nvrtc  # noqa: E402

CUBIN_DIR = os.path.join(HERE, "cubin")
BLOCK = 64
MAX_RANDOM = 16
MAX_LIST = 5 + MAX_RANDOM
THREADS = 128
SCHEDULE_THREADS = 1024
NOSPLIT = 1 << 30
# warp-specialised TMA variants (kernels/sparse_attention_ws.cuh): variant -> {D: (consumer
# warpgroups, K/V stages per consumer)}; threads (consumers + 1) * 128, one CTA per SM.
WS_CFG = {"ws": {64: (3, 3), 128: (2, 2)}, "ws4": {64: (4, 2), 128: (2, 2)},
          "ws4n": {64: (4, 2)},  # a measurement (wrong results): ws4 without K/V supply past 2 blocks
          "ws4p": {64: (4, 2), 128: (2, 2)}}  # ws4 with the item-ahead producer


class TmaDesc(ctypes.Structure):
    """CUtensorMap (128 opaque bytes), passed by value as a __grid_constant__ kernel parameter."""
    _fields_ = [("v", ctypes.c_uint64 * 16)]


class AttnParams(ctypes.Structure):
    _fields_ = [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p), ("o", ctypes.c_void_p),
        ("q_row", ctypes.c_int64), ("k_row", ctypes.c_int64), ("v_row", ctypes.c_int64), ("o_row", ctypes.c_int64),
        ("q_head", ctypes.c_int64), ("k_head", ctypes.c_int64), ("v_head", ctypes.c_int64), ("o_head", ctypes.c_int64),
        ("cu_seqlens", ctypes.c_void_p), ("req_seeds", ctypes.c_void_p), ("seed", ctypes.c_uint64),
        ("ws", ctypes.c_void_p), ("partial", ctypes.c_void_p),
        ("nseq", ctypes.c_int32), ("num_heads", ctypes.c_int32), ("layer", ctypes.c_int32),
        ("random_blocks", ctypes.c_int32), ("sparse", ctypes.c_int32), ("split_blocks", ctypes.c_int32),
        ("sort_by_cost", ctypes.c_int32), ("scale", ctypes.c_float),
    ]


assert ctypes.sizeof(AttnParams) == 168
assert AttnParams.cu_seqlens.offset == 96 and AttnParams.nseq.offset == 136 and AttnParams.scale.offset == 164


class CudaError(RuntimeError):
    pass


class Driver:
    def __init__(self):
        for name in ("libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1"):
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                pass
        else:
            raise OSError("no libcuda")
        self.lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self.lib.cuTensorMapEncodeTiled.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64),
            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
            ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.cuTensorMapEncodeTiled.restype = ctypes.c_int
        self.tmaps = {}

    def tensor_map(self, ptr, rows, cols, row_stride):
        """2-D tensor map of 16-bit elements for the ws kernels: cols contiguous elements per row,
        rows rows row_stride elements apart, 64 x 64 boxes, 128-byte swizzle, zero fill out of bounds."""
        key = (ptr, rows, cols, row_stride)
        tm = self.tmaps.get(key)
        if tm is None:
            raw = ctypes.create_string_buffer(128 + 64)
            off = (-ctypes.addressof(raw)) % 64
            gdim = (ctypes.c_uint64 * 2)(cols, rows)
            gstride = (ctypes.c_uint64 * 1)(row_stride * 2)
            box = (ctypes.c_uint32 * 2)(64, 64)
            estr = (ctypes.c_uint32 * 2)(1, 1)
            # CU_TENSOR_MAP_DATA_TYPE_UINT16 = 1, INTERLEAVE_NONE = 0, SWIZZLE_128B = 3,
            # L2_PROMOTION_L2_128B = 2, FLOAT_OOB_FILL_NONE = 0 (zeros)
            self.check(self.lib.cuTensorMapEncodeTiled(ctypes.addressof(raw) + off, 1, 2, ctypes.c_void_p(ptr), gdim,
                                                       gstride, box, estr, 0, 3, 2, 0), "cuTensorMapEncodeTiled")
            tm = TmaDesc()
            ctypes.memmove(ctypes.addressof(tm), ctypes.addressof(raw) + off, 128)
            if len(self.tmaps) > 256:
                self.tmaps.clear()
            self.tmaps[key] = tm
        return tm

    def check(self, rc, what):
        if rc != 0:
            s = ctypes.c_char_p()
            self.lib.cuGetErrorString(rc, ctypes.byref(s))
            raise CudaError(f"{what}: CUDA error {rc} ({s.value.decode() if s.value else '?'})")


def _arch():
    maj, mnr = torch.cuda.get_device_capability()
    return f"sm_{maj}{mnr}" + ("a" if maj >= 9 else "")


class Module:
    """The loaded sparse_attention module and its functions."""

    def __init__(self, log=print, name="sparse_attention", src_dir=None):
        torch.cuda.init()
        torch.empty(1, device="cuda")  # the primary context is current from here on
        self.drv = Driver()
        lib = self.drv.lib
        self.arch = _arch()
        self.mod = ctypes.c_void_p()
        path = os.path.join(CUBIN_DIR, f"{name}.{self.arch}.cubin")
        loaded = False
        if os.path.exists(path) and not os.environ.get("RAPTOR_SA_COMPILE"):
            data = open(path, "rb").read()
            rc = lib.cuModuleLoadData(ctypes.byref(self.mod), ctypes.c_char_p(data))
            if rc == 0:
                loaded = True
                self.source = f"carried cubin {os.path.basename(path)}"
            else:
                log(f"carried cubin did not load (CUDA error {rc}); compiling with this machine's NVRTC")
        if not loaded:
            cub, clog = nvrtc.compile_module(name, self.arch, src_dir=src_dir)
            self.drv.check(lib.cuModuleLoadData(ctypes.byref(self.mod), ctypes.c_char_p(cub)), "cuModuleLoadData")
            self.source = "NVRTC %s on this machine" % nvrtc.version()[0]
        self.funcs = {}
        props = torch.cuda.get_device_properties(0)
        self.nsm = props.multi_processor_count
        self.occ = {}

    def func(self, name):
        f = self.funcs.get(name)
        if f is None:
            f = ctypes.c_void_p()
            self.drv.check(self.drv.lib.cuModuleGetFunction(ctypes.byref(f), self.mod, name.encode()), name)
            self.funcs[name] = f
        return f

    def launch(self, name, grid, block, smem, args):
        f = self.func(name)
        holders = []
        ptrs = (ctypes.c_void_p * len(args))()
        for i, a in enumerate(args):
            if isinstance(a, ctypes.Structure) or isinstance(a, ctypes._SimpleCData):
                holders.append(a)
            else:
                raise TypeError(a)
            ptrs[i] = ctypes.cast(ctypes.pointer(a), ctypes.c_void_p)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        gx, gy = grid if isinstance(grid, tuple) else (grid, 1)
        rc = self.drv.lib.cuLaunchKernel(f, gx, gy, 1, block, 1, 1, smem, stream, ptrs, None)
        self.drv.check(rc, "cuLaunchKernel " + name)

    def attention_config(self, D, dtype, nst=2, variant=""):
        """variant "" (mma.sync, NST=2), "s3" (mma.sync, 3 stages), "b3" (mma.sync, D=64, 3 CTAs/SM
        register budget), "wg" (wgmma, sm_90a, D=64/128, 2 stages), "wg3" (wgmma, D=64, 3 stages),
        "ws" (warp-specialised TMA + wgmma, sm_90a, D=64/128; WS_CFG), "auto" (wg where it exists on
        this device, else mma.sync). Threads per CTA: threads_of(variant, D)."""
        sfx = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
        if variant == "auto":
            variant = "wg" if (self.arch == "sm_90a" and D in (64, 128)) else ""
        if nst == 3 and not variant:
            variant = "s3"
        name = f"sparse_attention_d{D}_{variant + '_' if variant else ''}{sfx}"
        nst = 3 if variant in ("s3", "wg3") else 2
        if variant in WS_CFG:
            nc, nst = WS_CFG[variant][D]  # (consumers, K/V stages)
            tiles = 2 + 2 * nst
            smem = nc * tiles * BLOCK * D * 2 + 1024
        elif variant.startswith("wg"):
            smem = (1 + 2 * nst) * BLOCK * D * 2 + 1024
        else:
            smem = (1 + 2 * nst) * BLOCK * (D + 8) * 2
        key = (name, smem)
        if key not in self.occ:
            f = self.func(name)
            lib = self.drv.lib
            self.drv.check(lib.cuFuncSetAttribute(f, 8, smem), "cuFuncSetAttribute")  # MAX_DYNAMIC_SHARED_SIZE_BYTES
            n = ctypes.c_int()
            self.drv.check(lib.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(n), f, self.threads_of(variant, D), ctypes.c_size_t(smem)), "occupancy")
            self.occ[key] = n.value
        return name, smem, self.occ[key]

    def threads_of(self, variant, D):
        if variant in WS_CFG:
            return (WS_CFG[variant][D][0] + 1) * 128
        return THREADS


def ws_sem_offset(nseq):
    return 16 + 17 * nseq


def ws_seginfo_offset(nseq, heads):
    return (ws_sem_offset(nseq) + 2 * heads * nseq + 3) & ~3


def ws_ints(nseq, heads):
    return ws_seginfo_offset(nseq, heads) + 16 * nseq


def partial_slots_bound(T, nseq, heads, C):
    return 2 * heads * (((T + BLOCK - 1) // BLOCK + nseq) // C + nseq)


# the wgmma kernels read item records (kernels/sparse_attention.cu, sparse_attention_items) when the workspace
# holds valid ones; scheduled calls build them for RECORD_LAYERS layers, as the engine does for a forward
REC_INTS = 32
RECORD_LAYERS = 12


def ws_items_offset(nseq, heads):
    return (ws_ints(nseq, heads) + 31) & ~31


def items_bound(T, nseq, heads, C):
    """kernels/sparse_attention.cuh items_bound: at least the tickets of any batch of T tokens in nseq sequences."""
    B = (T + BLOCK - 1) // BLOCK + nseq
    return heads * (B + (2 * B + C - 1) // C + 2 * nseq)


class SparseAttention:
    """One attention call = schedule kernel + persistent attention kernel (or the kernel alone, reusing the
    schedule left in the workspace: schedule=False)."""

    def __init__(self, module):
        self.m = module
        self.ws = None
        self.partial = None

    def buffers(self, T, nseq, H, D, C):
        n_ws = ws_items_offset(nseq, H) + REC_INTS * items_bound(T, nseq, H, C) * RECORD_LAYERS  # and item records
        n_part = max(1, partial_slots_bound(T, nseq, H, C)) * (64 * D + 128)
        if self.ws is None or self.ws.numel() < n_ws:
            self.ws = torch.zeros(n_ws, dtype=torch.int32, device="cuda")
        if self.partial is None or self.partial.numel() < n_part:
            self.partial = torch.empty(n_part, dtype=torch.float32, device="cuda")
        return self.ws, self.partial

    def params(self, q, k, v, o, cu, req_seeds, seed, layer, r, scale, sparse=1, split=64, sort=3):
        T, H, D = q.shape
        nseq = cu.numel() - 1
        assert cu.dtype == torch.int32 and req_seeds.dtype == torch.int64 and req_seeds.numel() == nseq
        assert 0 <= r <= MAX_RANDOM and split >= 1
        for t in (q, k, v, o):
            assert t.shape == (T, H, D) and t.stride(2) == 1 and t.stride(0) % 8 == 0 and t.stride(1) % 8 == 0
            assert t.data_ptr() % 16 == 0 and t.dtype == q.dtype
        ws, part = self.buffers(T, nseq, H, D, split)
        p = AttnParams()
        p.q, p.k, p.v, p.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr()
        p.q_row, p.k_row, p.v_row, p.o_row = q.stride(0), k.stride(0), v.stride(0), o.stride(0)
        p.q_head, p.k_head, p.v_head, p.o_head = q.stride(1), k.stride(1), v.stride(1), o.stride(1)
        p.cu_seqlens, p.req_seeds, p.seed = cu.data_ptr(), req_seeds.data_ptr(), seed & ((1 << 64) - 1)
        p.ws, p.partial = ws.data_ptr(), part.data_ptr()
        p.nseq, p.num_heads, p.layer, p.random_blocks = nseq, H, layer, r
        p.sparse, p.split_blocks, p.sort_by_cost, p.scale = int(sparse), int(split), int(sort), float(scale)
        return p

    def schedule(self, p):
        self.m.launch("sparse_attention_schedule", 1, SCHEDULE_THREADS, 0, [p])

    def items(self, p, T, split):
        """sparse_attention_items on the schedule in p's workspace: the records of RECORD_LAYERS layers."""
        nb = items_bound(T, p.nseq, p.num_heads, split)
        self.m.launch("sparse_attention_items", ((nb + 127) // 128, RECORD_LAYERS if p.sparse else 1), 128, 0,
                      [p, ctypes.c_int(RECORD_LAYERS), ctypes.c_int(nb)])

    def __call__(self, q, k, v, o, cu, req_seeds, seed=0, layer=0, r=3, scale=None, sparse=1, split=64, sort=3,
                 nst=2, grid=None, variant="auto", schedule=True, records=True):
        """schedule=False reuses the workspace's schedule, left by the previous call with the same cu_seqlens,
        r, split, sort and sparse (the engine's layers after the first); not for the ws kernels. A scheduled call
        of a wgmma kernel also builds the item records of RECORD_LAYERS layers unless records=False (the kernel
        then decodes and lists every item itself, as it does on records built for another seed or r)."""
        D = q.shape[2]
        if scale is None:
            scale = D ** -0.5
        p = self.params(q, k, v, o, cu, req_seeds, seed, layer, r, scale, sparse, split, sort)
        name, smem, occ = self.m.attention_config(D, q.dtype, nst, variant)
        args = [p]
        if variant in WS_CFG:
            T, H = q.shape[0], q.shape[1]
            drv = self.m.drv
            args += [drv.tensor_map(t.data_ptr(), T, (H - 1) * t.stride(1) + D, t.stride(0)) for t in (q, k, v)]
        assert schedule or variant not in WS_CFG, "the ws kernels do not leave the schedule ready"
        if schedule:
            self.schedule(p)
            if records and name.split("_")[3].startswith("wg"):  # the records of every layer, with the schedule
                self.items(p, q.shape[0], split)
        self.m.launch(name, grid or self.m.nsm * occ, self.m.threads_of(variant, D), smem, args)
        return p

    def plan(self, cu_host, req_seeds, seed, layer, r, H, sparse=1):
        """Key-block lists of every (query block, head) from the GPU generator:
        int32 [total_qblocks, H, 1 + MAX_LIST] (length, then the list or -1)."""
        nb = [-(-(cu_host[i + 1] - cu_host[i]) // BLOCK) for i in range(len(cu_host) - 1)]
        qb_base = [0]
        for x in nb:
            qb_base.append(qb_base[-1] + x)
        total = qb_base[-1]
        cu = torch.tensor(cu_host, dtype=torch.int32, device="cuda")
        qbb = torch.tensor(qb_base, dtype=torch.int32, device="cuda")
        out = torch.full((total, H, 1 + MAX_LIST), -7, dtype=torch.int32, device="cuda")
        dummy = torch.empty((1, H, 8), dtype=torch.float16, device="cuda")
        p = self.params(dummy, dummy, dummy, dummy, cu, req_seeds, seed, layer, r, 1.0, sparse, 32, 1)
        n = total * H
        self.m.launch("sparse_attention_plan", (n + 127) // 128, 128, 0,
                      [p, ctypes.c_void_p(qbb.data_ptr()), ctypes.c_void_p(out.data_ptr())])
        torch.cuda.synchronize()
        return out.cpu(), qb_base

    def vectors(self, cases):
        """cases: [(seed, rseed, layer, head, block, nb, r)] -> uint64 [n, 23] as python ints."""
        M = (1 << 64) - 1
        inp = torch.tensor([[(x & M) - (1 << 64) if (x & M) >= (1 << 63) else x for x in c] for c in cases],
                           dtype=torch.int64, device="cuda")
        out = torch.zeros((len(cases), 23), dtype=torch.int64, device="cuda")
        self.m.launch("sparse_attention_plan_vectors", (len(cases) + 63) // 64, 64, 0,
                      [ctypes.c_void_p(inp.data_ptr()), ctypes.c_int(len(cases)), ctypes.c_void_p(out.data_ptr())])
        torch.cuda.synchronize()
        return [[x & M for x in row] for row in out.cpu().tolist()]
