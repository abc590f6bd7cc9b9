package main

/*
#include "shim.h"
*/
import "C"

import (
	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// same(a, b) compiles only when a == b: one of the two differences would be
// a negative constant converted to uint. The C ABI's enum values are the Go
// packages' values, so they are passed across without a mapping table.
const (
	_ = uint(int(C.RAPTOR_OK)-int(status.OK)) + uint(int(status.OK)-int(C.RAPTOR_OK))
	_ = uint(int(C.RAPTOR_ERR_INVALID_ARGUMENT)-int(status.InvalidArgument)) + uint(int(status.InvalidArgument)-int(C.RAPTOR_ERR_INVALID_ARGUMENT))
	_ = uint(int(C.RAPTOR_ERR_OUT_OF_RANGE)-int(status.OutOfRange)) + uint(int(status.OutOfRange)-int(C.RAPTOR_ERR_OUT_OF_RANGE))
	_ = uint(int(C.RAPTOR_ERR_BUFFER_TOO_SMALL)-int(status.BufferTooSmall)) + uint(int(status.BufferTooSmall)-int(C.RAPTOR_ERR_BUFFER_TOO_SMALL))
	_ = uint(int(C.RAPTOR_ERR_INVALID_HANDLE)-int(status.InvalidHandle)) + uint(int(status.InvalidHandle)-int(C.RAPTOR_ERR_INVALID_HANDLE))
	_ = uint(int(C.RAPTOR_ERR_IO)-int(status.IO)) + uint(int(status.IO)-int(C.RAPTOR_ERR_IO))
	_ = uint(int(C.RAPTOR_ERR_INVALID_MODEL)-int(status.InvalidModel)) + uint(int(status.InvalidModel)-int(C.RAPTOR_ERR_INVALID_MODEL))
	_ = uint(int(C.RAPTOR_ERR_UNSUPPORTED)-int(status.Unsupported)) + uint(int(status.Unsupported)-int(C.RAPTOR_ERR_UNSUPPORTED))
	_ = uint(int(C.RAPTOR_ERR_BACKEND_UNAVAILABLE)-int(status.BackendUnavailable)) + uint(int(status.BackendUnavailable)-int(C.RAPTOR_ERR_BACKEND_UNAVAILABLE))
	_ = uint(int(C.RAPTOR_ERR_OUT_OF_MEMORY)-int(status.OutOfMemory)) + uint(int(status.OutOfMemory)-int(C.RAPTOR_ERR_OUT_OF_MEMORY))
	_ = uint(int(C.RAPTOR_ERR_BUSY)-int(status.Busy)) + uint(int(status.Busy)-int(C.RAPTOR_ERR_BUSY))
	_ = uint(int(C.RAPTOR_ERR_DEADLINE_EXCEEDED)-int(status.DeadlineExceeded)) + uint(int(status.DeadlineExceeded)-int(C.RAPTOR_ERR_DEADLINE_EXCEEDED))
	_ = uint(int(C.RAPTOR_ERR_CANCELLED)-int(status.Cancelled)) + uint(int(status.Cancelled)-int(C.RAPTOR_ERR_CANCELLED))
	_ = uint(int(C.RAPTOR_ERR_SHUTDOWN)-int(status.Shutdown)) + uint(int(status.Shutdown)-int(C.RAPTOR_ERR_SHUTDOWN))
	_ = uint(int(C.RAPTOR_ERR_DEVICE_FAILED)-int(status.DeviceFailed)) + uint(int(status.DeviceFailed)-int(C.RAPTOR_ERR_DEVICE_FAILED))
	_ = uint(int(C.RAPTOR_ERR_INTERNAL)-int(status.Internal)) + uint(int(status.Internal)-int(C.RAPTOR_ERR_INTERNAL))
	_ = uint(int(C.RAPTOR_ERR_TIMEOUT)-int(status.Timeout)) + uint(int(status.Timeout)-int(C.RAPTOR_ERR_TIMEOUT))

	_ = uint(int(C.RAPTOR_LOG_DEBUG)-int(engine.LogDebug)) + uint(int(engine.LogDebug)-int(C.RAPTOR_LOG_DEBUG))
	_ = uint(int(C.RAPTOR_LOG_INFO)-int(engine.LogInfo)) + uint(int(engine.LogInfo)-int(C.RAPTOR_LOG_INFO))
	_ = uint(int(C.RAPTOR_LOG_WARN)-int(engine.LogWarn)) + uint(int(engine.LogWarn)-int(C.RAPTOR_LOG_WARN))
	_ = uint(int(C.RAPTOR_LOG_ERROR)-int(engine.LogError)) + uint(int(engine.LogError)-int(C.RAPTOR_LOG_ERROR))

	_ = uint(int(C.RAPTOR_BACKEND_AUTO)-int(engine.BackendAuto)) + uint(int(engine.BackendAuto)-int(C.RAPTOR_BACKEND_AUTO))
	_ = uint(int(C.RAPTOR_BACKEND_CPU)-int(engine.BackendCPU)) + uint(int(engine.BackendCPU)-int(C.RAPTOR_BACKEND_CPU))
	_ = uint(int(C.RAPTOR_BACKEND_CUDA)-int(engine.BackendCUDA)) + uint(int(engine.BackendCUDA)-int(C.RAPTOR_BACKEND_CUDA))
	_ = uint(int(C.RAPTOR_DTYPE_FP32)-int(engine.ComputeFP32)) + uint(int(engine.ComputeFP32)-int(C.RAPTOR_DTYPE_FP32))
	_ = uint(int(C.RAPTOR_DTYPE_FP16)-int(engine.ComputeFP16)) + uint(int(engine.ComputeFP16)-int(C.RAPTOR_DTYPE_FP16))
	_ = uint(int(C.RAPTOR_DTYPE_BF16)-int(engine.ComputeBF16)) + uint(int(engine.ComputeBF16)-int(C.RAPTOR_DTYPE_BF16))
	_ = uint(int(C.RAPTOR_POOLING_CLS)-int(engine.PoolCLS)) + uint(int(engine.PoolCLS)-int(C.RAPTOR_POOLING_CLS))
	_ = uint(int(C.RAPTOR_POOLING_MEAN)-int(engine.PoolMean)) + uint(int(engine.PoolMean)-int(C.RAPTOR_POOLING_MEAN))

	// raptor_model_info_t carries the loader's enum values as they are.
	_ = uint(int(C.RAPTOR_FAMILY_BERT)-int(loader.FamilyBERT)) + uint(int(loader.FamilyBERT)-int(C.RAPTOR_FAMILY_BERT))
	_ = uint(int(C.RAPTOR_FAMILY_ROBERTA)-int(loader.FamilyRoBERTa)) + uint(int(loader.FamilyRoBERTa)-int(C.RAPTOR_FAMILY_ROBERTA))
	_ = uint(int(C.RAPTOR_FAMILY_BIGBIRD)-int(loader.FamilyBigBird)) + uint(int(loader.FamilyBigBird)-int(C.RAPTOR_FAMILY_BIGBIRD))
	_ = uint(int(C.RAPTOR_ACTIVATION_GELU)-int(loader.ActGELU)) + uint(int(loader.ActGELU)-int(C.RAPTOR_ACTIVATION_GELU))
	_ = uint(int(C.RAPTOR_ACTIVATION_GELU_TANH)-int(loader.ActGELUTanh)) + uint(int(loader.ActGELUTanh)-int(C.RAPTOR_ACTIVATION_GELU_TANH))
	_ = uint(int(C.RAPTOR_ATTENTION_DENSE)-int(loader.AttentionDense)) + uint(int(loader.AttentionDense)-int(C.RAPTOR_ATTENTION_DENSE))
	_ = uint(int(C.RAPTOR_ATTENTION_BLOCK_SPARSE)-int(loader.AttentionBlockSparse)) + uint(int(loader.AttentionBlockSparse)-int(C.RAPTOR_ATTENTION_BLOCK_SPARSE))
	_ = uint(int(C.RAPTOR_DTYPE_FP32)-int(loader.F32)) + uint(int(loader.F32)-int(C.RAPTOR_DTYPE_FP32))
	_ = uint(int(C.RAPTOR_DTYPE_FP16)-int(loader.F16)) + uint(int(loader.F16)-int(C.RAPTOR_DTYPE_FP16))
	_ = uint(int(C.RAPTOR_DTYPE_BF16)-int(loader.BF16)) + uint(int(loader.BF16)-int(C.RAPTOR_DTYPE_BF16))
)
