package cuda

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
)

// NVRTC is a loaded NVRTC library. It needs no GPU: kernels compile for any
// architecture the library knows, so CI checks every kernel on machines
// without one. Its methods are safe for concurrent use (each compilation is
// its own NVRTC program).
type NVRTC struct {
	lib          *library
	Major, Minor int // NVRTC version, e.g. 13, 2

	nvrtcVersion            func(major, minor *int32) int32
	nvrtcGetErrorString     func(rc int32) string
	nvrtcCreateProgram      func(prog *uintptr, src, name string, nHeaders int32, headers, names unsafe.Pointer) int32
	nvrtcDestroyProgram     func(prog *uintptr) int32
	nvrtcCompileProgram     func(prog uintptr, nOpts int32, opts unsafe.Pointer) int32
	nvrtcGetProgramLogSize  func(prog uintptr, n *uint64) int32
	nvrtcGetProgramLog      func(prog uintptr, log *byte) int32
	nvrtcGetCUBINSize       func(prog uintptr, n *uint64) int32
	nvrtcGetCUBIN           func(prog uintptr, cubin *byte) int32
	nvrtcGetSupportedArchs  func(archs *int32) int32
	nvrtcGetNumSupportedArc func(n *int32) int32
}

// LoadNVRTC finds and binds NVRTC (see the package documentation for the
// search order). The error is a BackendUnavailable *status.Error listing
// every candidate tried.
func LoadNVRTC() (*NVRTC, error) {
	return loadNVRTC(currentEnv())
}

func loadNVRTC(env discoveryEnv) (*NVRTC, error) {
	lib, err := env.load(specNVRTC)
	if err != nil {
		return nil, err
	}
	n := &NVRTC{lib: lib}
	if err := bind(lib, []symbol{
		{name: "nvrtcVersion", fn: &n.nvrtcVersion},
		{name: "nvrtcGetErrorString", fn: &n.nvrtcGetErrorString},
		{name: "nvrtcCreateProgram", fn: &n.nvrtcCreateProgram},
		{name: "nvrtcDestroyProgram", fn: &n.nvrtcDestroyProgram},
		{name: "nvrtcCompileProgram", fn: &n.nvrtcCompileProgram},
		{name: "nvrtcGetProgramLogSize", fn: &n.nvrtcGetProgramLogSize},
		{name: "nvrtcGetProgramLog", fn: &n.nvrtcGetProgramLog},
		{name: "nvrtcGetCUBINSize", fn: &n.nvrtcGetCUBINSize},
		{name: "nvrtcGetCUBIN", fn: &n.nvrtcGetCUBIN},
		{name: "nvrtcGetSupportedArchs", fn: &n.nvrtcGetSupportedArchs, optional: true},
		{name: "nvrtcGetNumSupportedArchs", fn: &n.nvrtcGetNumSupportedArc, optional: true},
	}); err != nil {
		return nil, err
	}
	var ma, mi int32
	if rc := n.nvrtcVersion(&ma, &mi); rc != 0 {
		return nil, status.Wrap(status.BackendUnavailable, n.callError("nvrtcVersion", rc), "cuda")
	}
	n.Major, n.Minor = int(ma), int(mi)
	return n, nil
}

// Path is the file or soname NVRTC was loaded from.
func (n *NVRTC) Path() string { return n.lib.path }

// Version is "major.minor".
func (n *NVRTC) Version() string { return fmt.Sprintf("%d.%d", n.Major, n.Minor) }

// SupportedArchs lists the compute capabilities (e.g. 80, 90) this NVRTC
// can compile for; nil when the library cannot say.
func (n *NVRTC) SupportedArchs() []int {
	if n.nvrtcGetNumSupportedArc == nil || n.nvrtcGetSupportedArchs == nil {
		return nil
	}
	var k int32
	if n.nvrtcGetNumSupportedArc(&k) != 0 || k <= 0 {
		return nil
	}
	a := make([]int32, k)
	if n.nvrtcGetSupportedArchs(&a[0]) != 0 {
		return nil
	}
	out := make([]int, k)
	for i, v := range a {
		out[i] = int(v)
	}
	return out
}

func (n *NVRTC) callError(call string, rc int32) *CallError {
	return &CallError{Lib: "nvrtc", Call: call, Code: int(rc), Name: n.nvrtcGetErrorString(rc)}
}

// CompileError is a kernel source that NVRTC rejected; Log holds the
// compiler's messages.
type CompileError struct {
	Name string // the program (file) name
	Arch string
	Log  string
	Err  *CallError
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("nvrtc: %s for %s: %v\n%s", e.Name, e.Arch, e.Err, strings.TrimSpace(e.Log))
}

// Compile compiles one self-contained CUDA C++ source (see kernels.Expand)
// to a cubin for arch (e.g. "sm_90a"), with extra NVRTC options. It returns
// the cubin and the compiler log (warnings; the ptxas report when
// --ptxas-options=-v is among opts). A rejected source gives a
// *status.Error with code Internal wrapping a *CompileError.
func (n *NVRTC) Compile(name, src, arch string, opts []string) (cubin []byte, log string, err error) {
	all := append([]string{"--gpu-architecture=" + arch}, opts...)
	var prog uintptr
	if rc := n.nvrtcCreateProgram(&prog, src, name, 0, nil, nil); rc != 0 {
		return nil, "", status.Wrap(status.Internal, n.callError("nvrtcCreateProgram("+name+")", rc), "cuda")
	}
	defer n.nvrtcDestroyProgram(&prog)

	// The option array holds pointers, so both it and the strings it points
	// to are pinned for the call (the cgo rules for Go memory passed to C).
	var pin runtime.Pinner
	defer pin.Unpin()
	cstrs := make([]*byte, len(all))
	for i, o := range all {
		b := append([]byte(o), 0)
		pin.Pin(&b[0])
		cstrs[i] = &b[0]
	}
	pin.Pin(&cstrs[0])
	rc := n.nvrtcCompileProgram(prog, int32(len(cstrs)), unsafe.Pointer(&cstrs[0]))
	runtime.KeepAlive(cstrs)

	var ls uint64
	if n.nvrtcGetProgramLogSize(prog, &ls) == 0 && ls > 1 {
		buf := make([]byte, ls)
		if n.nvrtcGetProgramLog(prog, &buf[0]) == 0 {
			log = strings.TrimRight(string(buf), "\x00")
		}
	}
	if rc != 0 {
		ce := &CompileError{Name: name, Arch: arch, Log: log, Err: n.callError("nvrtcCompileProgram", rc)}
		return nil, log, &status.Error{Code: status.Internal, Msg: "cuda: kernel compilation failed", Err: ce}
	}
	var cs uint64
	if rc := n.nvrtcGetCUBINSize(prog, &cs); rc != 0 {
		return nil, log, status.Wrap(status.Internal, n.callError("nvrtcGetCUBINSize", rc), "cuda")
	}
	if cs == 0 {
		return nil, log, status.Errorf(status.Internal, "cuda: nvrtc produced no cubin for %s (arch %s must be a real sm_XX)", name, arch)
	}
	cubin = make([]byte, cs)
	if rc := n.nvrtcGetCUBIN(prog, &cubin[0]); rc != 0 {
		return nil, log, status.Wrap(status.Internal, n.callError("nvrtcGetCUBIN", rc), "cuda")
	}
	return cubin, log, nil
}

// KernelResources is what ptxas reported for one kernel.
type KernelResources struct {
	Name      string
	Registers int
	SpillSt   int // spill stores, bytes
	SpillLd   int // spill loads, bytes
	Stack     int // stack frame, bytes
	Smem      int // static shared memory, bytes
}

var (
	rePtxFunc   = regexp.MustCompile(`Compiling entry function '([^']+)'`)
	rePtxRegs   = regexp.MustCompile(`Used (\d+) registers`)
	rePtxSpill  = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	rePtxShared = regexp.MustCompile(`(\d+) bytes smem`)
)

// ParsePtxasReport extracts per-kernel registers, spills, stack and shared
// memory from a compile log produced with --ptxas-options=-v.
func ParsePtxasReport(log string) []KernelResources {
	var out []KernelResources
	cur := -1
	for _, l := range strings.Split(log, "\n") {
		if m := rePtxFunc.FindStringSubmatch(l); m != nil {
			out = append(out, KernelResources{Name: m[1]})
			cur = len(out) - 1
			continue
		}
		if cur < 0 {
			continue
		}
		if m := rePtxSpill.FindStringSubmatch(l); m != nil {
			out[cur].Stack, _ = strconv.Atoi(m[1])
			out[cur].SpillSt, _ = strconv.Atoi(m[2])
			out[cur].SpillLd, _ = strconv.Atoi(m[3])
		}
		if m := rePtxRegs.FindStringSubmatch(l); m != nil {
			out[cur].Registers, _ = strconv.Atoi(m[1])
			if s := rePtxShared.FindStringSubmatch(l); s != nil {
				out[cur].Smem, _ = strconv.Atoi(s[1])
			}
		}
	}
	return out
}
