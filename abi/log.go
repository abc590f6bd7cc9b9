package main

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// The log sink is process-wide: every engine logs through logMessage.
// Deliveries hold sinkMu for reading, so when raptor_set_log_callback
// returns no call of the previous callback is still running.
var (
	sinkMu sync.RWMutex
	sink   = logSink{level: engine.LogInfo}
)

type logSink struct {
	fn       uintptr // raptor_log_fn; 0 = stderr
	level    engine.LogLevel
	userData uintptr
}

//export raptorgo_set_log_callback
func raptorgo_set_log_callback(fn C.uintptr_t, minLevel C.int32_t, userData C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_set_log_callback"
	defer guard(name, &st)()
	if minLevel < C.RAPTOR_LOG_DEBUG || minLevel > C.RAPTOR_LOG_ERROR {
		return failf(name, status.InvalidArgument, "min_level %d is not a RAPTOR_LOG_* level (0..3)", minLevel)
	}
	if C.raptorc_in_log() != 0 {
		return failf(name, status.InvalidArgument, "cannot be called from inside a log callback")
	}
	sinkMu.Lock()
	sink = logSink{fn: uintptr(fn), level: engine.LogLevel(minLevel), userData: uintptr(userData)}
	sinkMu.Unlock()
	return C.RAPTOR_OK
}

var levelNames = [...]string{"DEBUG", "INFO", "WARN", "ERROR"}

// logMessage is the engine.LogFunc of every engine: one line per call to the
// host's callback, or to stderr. Messages logged while the calling thread is
// inside the host's log callback (it called raptor) are dropped, so a
// callback cannot recurse into itself.
func logMessage(level engine.LogLevel, msg string) {
	if C.raptorc_in_log() != 0 {
		return
	}
	sinkMu.RLock()
	defer sinkMu.RUnlock()
	if level < sink.level {
		return
	}
	for line := range strings.Lines(msg) {
		line = strings.TrimRight(line, "\r\n")
		if sink.fn == 0 {
			name := "LOG"
			if level >= 0 && int(level) < len(levelNames) {
				name = levelNames[level]
			}
			fmt.Fprintf(os.Stderr, "raptor %s: %s\n", name, line)
			continue
		}
		cs := C.CString(line)
		C.raptorc_call_log(C.uintptr_t(sink.fn), C.int32_t(level), cs, C.uintptr_t(sink.userData))
		C.free(unsafe.Pointer(cs))
	}
}

func logf(level engine.LogLevel, format string, args ...any) {
	logMessage(level, fmt.Sprintf(format, args...))
}
