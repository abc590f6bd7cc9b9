// Package raptor is a Go host binding of libraptor.so, raptor's C ABI
// (include/raptor.h). It loads the library at run time with purego: no cgo,
// so a program using it builds with CGO_ENABLED=0.
//
//	lib, err := raptor.Load() // $RAPTOR_LIB, else libraptor.so on the loader path
//	eng, err := lib.NewEngine(nil)
//	defer eng.Close()
//	model, err := eng.LoadModel("build/models/all-MiniLM-L6-v2.raptor")
//	vecs, err := model.Encode(ctx, [][]int32{{101, 7592, 102}}, raptor.EncodeOptions{Normalize: true})
//
// Errors are *Error values carrying the raptor status code; compare them with
// errors.Is against the Err* sentinels. A libraptor.so cannot be unloaded
// (golang/go#11100): load it once per process.
package raptor

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// ABIVersion is the raptor.h ABI version this package is written against.
const ABIVersion = 1

// Library is a loaded libraptor.so. It is never unloaded.
type Library struct {
	path string
	dl   uintptr    // the dlopen handle
	hd   headsFuncs // appended functions (heads.go), resolved on first use
	sf   schedFuncs // appended functions (sched.go), resolved on first use
	df   devFuncs   // appended functions (devices.go), resolved on first use
	wf   warmFuncs  // appended functions (warmup.go), resolved on first use

	abiVersion           func() uint32
	version              func() string
	statusName           func(int32) string
	lastError            func() string
	setLogCallback       func(fn uintptr, minLevel int32, user uintptr) int32
	engineOptionsDefault func(*cEngineOptions)
	engineCreate         func(*cEngineOptions, *uintptr) int32
	engineFree           func(uintptr)
	engineBackend        func(uintptr) string
	engineGetStats       func(uintptr, *cEngineStats) int32
	modelLoad            func(uintptr, *byte, *uintptr) int32
	modelLoadFromMemory  func(uintptr, unsafe.Pointer, uintptr, *uintptr) int32
	modelFree            func(uintptr)
	modelGetInfo         func(uintptr, *cModelInfo) int32
	modelTokenize        func(uintptr, *byte, uintptr, int32, *int32, uintptr, *uintptr) int32
	batchDefault         func(*cBatch)
	outputDefault        func(*cOutput)
	encode               func(uintptr, *cBatch, *cOutput) int32
	submit               func(uintptr, *cBatch, *cOutput, uintptr, uintptr, *uintptr) int32
	requestPoll          func(uintptr, *int32, *int32) int32
	requestWait          func(uintptr, int64, *int32) int32
	requestCancel        func(uintptr) int32
	requestError         func(uintptr) string
	requestFree          func(uintptr)
}

var (
	libsMu sync.Mutex
	libs   = map[string]*Library{}
)

// Open loads the library at path (a file name without a slash is looked up
// on the dynamic loader's path). Opening the same path again returns the same
// *Library.
func Open(path string) (*Library, error) {
	libsMu.Lock()
	defer libsMu.Unlock()
	if l := libs[path]; l != nil {
		return l, nil
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("raptor: loading %s: %w", path, err)
	}
	l := &Library{path: path, dl: h}
	if err := l.register(h); err != nil {
		return nil, fmt.Errorf("raptor: %s: %w", path, err)
	}
	if v := l.abiVersion(); v < ABIVersion {
		return nil, fmt.Errorf("raptor: %s has ABI version %d, this package needs %d", path, v, ABIVersion)
	}
	libs[path] = l
	return l, nil
}

// Load opens $RAPTOR_LIB, or libraptor.so from the dynamic loader's path.
func Load() (*Library, error) {
	if p := os.Getenv("RAPTOR_LIB"); p != "" {
		return Open(p)
	}
	return Open("libraptor.so")
}

// symbol is a library function and the Go func variable that calls it.
type symbol struct {
	fptr any
	name string
}

// registerSymbols points each fns[i].fptr at its function in the library
// dlopen'ed as h; it stops at the first one missing and returns its name.
func registerSymbols(h uintptr, fns []symbol) (missing string, err error) {
	for _, f := range fns {
		sym, err := purego.Dlsym(h, f.name)
		if err != nil {
			return f.name, err
		}
		purego.RegisterFunc(f.fptr, sym)
	}
	return "", nil
}

// registerAppended registers functions appended to the ABI for feature;
// a library that predates them answers StatusUnsupported.
func (l *Library) registerAppended(feature string, fns []symbol) error {
	if missing, err := registerSymbols(l.dl, fns); err != nil {
		return &Error{Status: StatusUnsupported, Msg: fmt.Sprintf("%s predates %s (no %s)", l.path, feature, missing)}
	}
	return nil
}

func (l *Library) register(h uintptr) (err error) {
	fns := []symbol{
		{&l.abiVersion, "raptor_abi_version"},
		{&l.version, "raptor_version"},
		{&l.statusName, "raptor_status_name"},
		{&l.lastError, "raptor_last_error"},
		{&l.setLogCallback, "raptor_set_log_callback"},
		{&l.engineOptionsDefault, "raptor_engine_options_default"},
		{&l.engineCreate, "raptor_engine_create"},
		{&l.engineFree, "raptor_engine_free"},
		{&l.engineBackend, "raptor_engine_backend"},
		{&l.engineGetStats, "raptor_engine_get_stats"},
		{&l.modelLoad, "raptor_model_load"},
		{&l.modelLoadFromMemory, "raptor_model_load_from_memory"},
		{&l.modelFree, "raptor_model_free"},
		{&l.modelGetInfo, "raptor_model_get_info"},
		{&l.modelTokenize, "raptor_model_tokenize"},
		{&l.batchDefault, "raptor_batch_default"},
		{&l.outputDefault, "raptor_output_default"},
		{&l.encode, "raptor_encode"},
		{&l.submit, "raptor_submit"},
		{&l.requestPoll, "raptor_request_poll"},
		{&l.requestWait, "raptor_request_wait"},
		{&l.requestCancel, "raptor_request_cancel"},
		{&l.requestError, "raptor_request_error"},
		{&l.requestFree, "raptor_request_free"},
	}
	if missing, err := registerSymbols(h, fns); err != nil {
		return fmt.Errorf("missing symbol %s: %w", missing, err)
	}
	return nil
}

// Path is the path the library was opened from.
func (l *Library) Path() string { return l.path }

// Version is the library's version string.
func (l *Library) Version() string { return l.version() }

// ABIVersion is the loaded library's ABI version.
func (l *Library) ABIVersion() uint32 { return l.abiVersion() }

// StatusName is the library's name for a status code.
func (l *Library) StatusName(s Status) string { return l.statusName(int32(s)) }

// call runs f, a raptor call returning a status, and turns a failure into an
// *Error with the library's message. The message is thread-local in the
// library, so the goroutine stays on one OS thread for both calls.
func (l *Library) call(f func() int32) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if st := f(); st != 0 {
		return &Error{Status: Status(st), Msg: l.lastError()}
	}
	return nil
}

// LogLevel is a raptor log level.
type LogLevel int32

// Log levels.
const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1
	LogWarn  LogLevel = 2
	LogError LogLevel = 3
)

var (
	logOnce sync.Once
	logCB   uintptr
	logMu   sync.RWMutex
	logFn   func(LogLevel, string)
)

// SetLogCallback sends the library's log lines at minLevel and above to fn,
// which may be called from any goroutine. fn == nil restores the default
// (stderr). The setting is process-wide.
func (l *Library) SetLogCallback(fn func(level LogLevel, msg string), minLevel LogLevel) error {
	if fn == nil {
		err := l.call(func() int32 { return l.setLogCallback(0, int32(minLevel), 0) })
		if err == nil {
			logMu.Lock()
			logFn = nil
			logMu.Unlock()
		}
		return err
	}
	logOnce.Do(func() {
		logCB = purego.NewCallback(func(level int32, msg *byte, _ uintptr) {
			logMu.RLock()
			f := logFn
			logMu.RUnlock()
			if f != nil {
				f(LogLevel(level), goString(msg))
			}
		})
	})
	logMu.Lock()
	logFn = fn
	logMu.Unlock()
	return l.call(func() int32 { return l.setLogCallback(logCB, int32(minLevel), 0) })
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString returns s as a NUL-terminated byte slice, or an error if s holds a NUL.
func cString(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return nil, &Error{Status: StatusInvalidArgument, Msg: "string contains a NUL byte"}
		}
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b, nil
}
