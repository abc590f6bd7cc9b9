package cuda

import "sync"

// Stream capture and the rest of the process.
//
// Every Ctx of one GPU shares the device's primary context. A CUDA graph
// capture (Ctx.Capture, on one Ctx's compute stream) is invalidated, and
// the driver has been seen to crash (SIGSEGV in cuCtxSynchronize, the GPU
// soak with several engines in one process), when another thread makes a
// context-wide call meanwhile: a context synchronisation, allocation or
// free, module load or unload, stream creation or destruction, a cuBLASLt
// handle's creation or destruction. So those calls of every Ctx take the
// device's capture lock shared (Ctx.shared), and a capture takes it
// exclusively; captures are rare (once per graph class) and short (~0.5 ms).
// No Ctx synchronises the whole context: a Ctx waits for its own streams.
// Other CUDA users in the host process (PyTorch, CuPy) are outside this
// lock: README says to turn graphs off (RAPTOR_CUDA_GRAPHS=0) where they
// synchronise or allocate from other threads while raptor serves.

var captureLocks sync.Map // device ordinal -> *sync.RWMutex

// captureLock is the capture lock of c's device.
func (c *Ctx) captureLock() *sync.RWMutex {
	if c.capLock == nil {
		l, ok := captureLocks.Load(c.dev)
		if !ok {
			l, _ = captureLocks.LoadOrStore(c.dev, new(sync.RWMutex))
		}
		c.capLock = l.(*sync.RWMutex)
	}
	return c.capLock
}

// shared takes the device's capture lock shared for a context-wide call
// and returns its release. Nested calls (a pool trim inside a teardown) and
// calls inside this Ctx's own capture take nothing: a second RLock would
// deadlock behind a waiting capture.
func (c *Ctx) shared() (release func()) {
	if c.capturing || c.sharedDepth > 0 {
		c.sharedDepth++
		return func() { c.sharedDepth-- }
	}
	l := c.captureLock()
	l.RLock()
	c.sharedDepth++
	return func() {
		c.sharedDepth--
		l.RUnlock()
	}
}
