"""Minimal NVRTC driver (ctypes): compiles a kernels/*.cu module with its
headers passed to NVRTC (the same options as internal/cuda) and returns the
cubin and the log. Used on the development machine (compile check, cubins to
carry) and on the GPU machine (fallback when a carried cubin does not load)."""
import ctypes
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
KERNELS = os.path.join(ROOT, "kernels")
OPTIONS = ["--std=c++17", "--device-as-default-execution-space"]  # internal/cuda.CompileOptions


def _load():
    cands = [os.environ.get("RAPTOR_NVRTC", "")]
    for p in sys.path:
        cands += glob.glob(os.path.join(p, "nvidia", "cu13", "lib", "libnvrtc.so.13"))
        cands += glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.1*"))
    cands += ["libnvrtc.so.13", "libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so",
              "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.13"]
    for c in cands:
        if not c:
            continue
        try:
            return ctypes.CDLL(c), c
        except OSError:
            pass
    raise OSError("no libnvrtc found")


def version():
    lib, path = _load()
    a, b = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
    return f"{a.value}.{b.value}", path


def compile_module(name, arch, extra=(), src_dir=None):
    """Compile <src_dir or kernels>/<name>.cu for arch (e.g. 'sm_90a'); returns (cubin bytes, log)."""
    lib, _ = _load()
    src = open(os.path.join(src_dir or KERNELS, name + ".cu")).read()
    hdrs = sorted(glob.glob(os.path.join(KERNELS, "*.cuh")))
    hnames = [os.path.basename(h).encode() for h in hdrs]
    hsrc = [open(h).read().encode() for h in hdrs]
    prog = ctypes.c_void_p()
    n = len(hdrs)
    HArr = ctypes.c_char_p * max(n, 1)
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), (name + ".cu").encode(), n,
                                HArr(*hsrc), HArr(*hnames))
    if rc:
        raise RuntimeError(f"nvrtcCreateProgram: {rc}")
    opts = [f"--gpu-architecture={arch}"] + OPTIONS + list(extra)
    if name == "sparse_attention":
        opts.append("-DRAPTOR_SA_WS")  # the warp-specialised variants (the engine leaves them out)
    OArr = ctypes.c_char_p * len(opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), OArr(*[o.encode() for o in opts]))
    ls = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(ls))
    buf = ctypes.create_string_buffer(ls.value)
    lib.nvrtcGetProgramLog(prog, buf)
    log = buf.value.decode(errors="replace")
    if rc:
        raise RuntimeError(f"nvrtc compile of {name} for {arch} failed ({rc}):\n{log}")
    cs = ctypes.c_size_t()
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(cs))
    cub = ctypes.create_string_buffer(cs.value)
    lib.nvrtcGetCUBIN(prog, cub)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return cub.raw, log


def report(log):
    """Per-kernel (name, regs, stack, spill stores, spill loads, smem) from a ptxas -v log."""
    out, cur = [], None
    for l in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", l)
        if m:
            cur = [m.group(1), 0, 0, 0, 0, 0]
            out.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", l)
        if m:
            cur[2:5] = [int(x) for x in m.groups()]
        m = re.search(r"Used (\d+) registers", l)
        if m:
            cur[1] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", l)
            if s:
                cur[5] = int(s.group(1))
    return out


if __name__ == "__main__":
    # python3 nvrtc.py [outdir]: compile sparse_attention for sm_80 and sm_90a,
    # print the ptxas report, write sm_90a/sm_80 cubins to outdir.
    outdir = sys.argv[1] if len(sys.argv) > 1 else None
    print("NVRTC", *version())
    for arch in ("sm_80", "sm_90a"):
        cub, log = compile_module("sparse_attention", arch, ["--ptxas-options=-v"])
        warn = [l for l in log.splitlines() if "warning" in l.lower()]
        for w in warn:
            print("  ", w)
        print(f"{arch}: cubin {len(cub)} bytes")
        for r in report(log):
            print(f"  {r[0]:40s} regs {r[1]:4d} stack {r[2]:4d} spill {r[3]}/{r[4]} smem {r[5]}")
        if outdir:
            os.makedirs(outdir, exist_ok=True)
            open(os.path.join(outdir, f"sparse_attention.{arch}.cubin"), "wb").write(cub)
    # the L2 bandwidth probe (bench/attention_bench.py), sm_90a only
    cub, log = compile_module("l2_probe", "sm_90a", ["--ptxas-options=-v"], src_dir=HERE)
    print(f"l2_probe sm_90a: cubin {len(cub)} bytes")
    if outdir:
        open(os.path.join(outdir, "l2_probe.sm_90a.cubin"), "wb").write(cub)
