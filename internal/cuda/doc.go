// Package cuda is raptor's CUDA runtime layer: purego bindings of the CUDA
// driver API, NVRTC and cuBLASLt loaded at run time (no cgo, no CUDA at
// build time), a device worker that owns each GPU's context, caching device
// and pinned-host allocators, the on-disk kernel compile cache, cuBLASLt
// GEMMs with fused epilogues, and launchers of the kernels embedded from
// package kernels.
//
// # Using a device
//
//	dev, err := cuda.Open(cuda.Config{Device: 0, Log: logf})
//	if err != nil { ... } // a *status.Error, BackendUnavailable: fall back to the CPU
//	defer dev.Close()
//	err = dev.Do(func(c *cuda.Ctx) error {
//		x, err := c.Alloc(n)
//		...
//		return c.Linear(cuda.LinearArgs{...})
//	})
//
// Every CUDA call runs on one goroutine per device, locked to its OS thread,
// that retains the device's primary context (ARCHITECTURE.md, decision 3);
// Do hands it a function and waits. Errors are *status.Error values:
// BackendUnavailable (no library, no device, too old a GPU), OutOfMemory
// (with the sizes; the device stays usable), DeviceFailed (a sticky fault:
// the Device refuses all later work, the process goes on), InvalidArgument,
// Unsupported, Shutdown, Internal. Their cause, where a library call
// failed, is a *CallError naming the call and the library's error name and
// description (cuGetErrorName/cuGetErrorString, nvrtcGetErrorString,
// cublasLtGetStatusName/String).
//
// # Library discovery
//
// For each of libcuda.so.1, libnvrtc.so.13|.12 and libcublasLt.so.13|.12,
// in order: the directories of RAPTOR_CUDA_LIB_DIR (colon-separated); the
// bare sonames (the dynamic loader's own search: LD_LIBRARY_PATH, the
// ldconfig cache); well-known directories (/usr/local/nvidia/lib64,
// /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib, ...);
// and the lib directories of NVIDIA's PyPI wheels (nvidia/cu13/lib,
// nvidia/cuda_nvrtc/lib, nvidia/cublas/lib) under every site-packages
// directory found through $VIRTUAL_ENV, python3's sys.path and common
// prefixes. When none loads, the error lists every candidate with the
// reason it failed. RAPTOR_CUDA_DISABLE_LIBS (a test hook, e.g.
// "cublasLt") restricts the named libraries to RAPTOR_CUDA_LIB_DIR.
//
// # Kernels
//
// Kernel modules (kernels/*.cu) are compiled by NVRTC for the device's exact
// architecture (sm_80, sm_86, sm_90a, ...) at first use and cached on disk
// (see kcache.go for the format): keyed by source, options, NVRTC version
// and architecture; written atomically; a corrupt entry, or one the driver
// rejects, is recompiled and replaced.
package cuda
