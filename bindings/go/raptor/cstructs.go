package raptor

import "unsafe"

// Go mirrors of the structs of include/raptor.h, field for field. Go's
// layout of these types equals the C layout on the 64-bit platforms raptor
// supports; layout_test.go checks every size and offset against the header
// compiled by the system C compiler.

type cEngineOptions struct {
	StructSize      uintptr
	Backend         int32
	Device          int32
	ComputeDType    int32
	WorkerThreads   int32
	MaxBatchTokens  int64
	MaxQueueDelayUs int64
	QueueCapacity   int64
	Seed            uint64
	KernelCacheDir  *byte
	// Appended (several devices).
	Devices    *int32
	NumDevices uintptr
	AllDevices int32
}

// cEngineOptionsV1Size is RAPTOR_ENGINE_OPTIONS_V1_SIZE.
const cEngineOptionsV1Size = unsafe.Offsetof(cEngineOptions{}.Devices)

type cWarmupParams struct {
	StructSize   uintptr
	MaxTokens    int64
	TokenTypeIDs int32
	Seeds        int32
	Hidden       int32
	Pooled       int32
	Pooling      int32
	Normalize    int32
}

type cDeviceStats struct {
	StructSize                                          uintptr
	Index, Ordinal, Failed, BusyLanes                   int32
	Batches, Requests, Tokens, Requeued, FailedInFlight uint64
	OutstandingCost                                     float64
	WeightBytes, MemoryInUse, MemoryCached, MemoryTotal int64
}

type cEngineStats struct {
	StructSize        uintptr
	RequestsSubmitted uint64
	RequestsCompleted uint64
	RequestsFailed    uint64
	RequestsCancelled uint64
	Batches           uint64
	Tokens            uint64
	QueueDepth        int64
	LiveModels        int64
	LiveRequests      int64
	ProcessHandles    int64
	ProcessGoroutines int64
	ProcessHeapBytes  int64
	// appended (scheduler); the v1 struct ends here (cEngineStatsV1Size)
	QueueLatencyP50Us int64
	QueueLatencyP99Us int64
	LatencyP50Us      int64
	LatencyP99Us      int64
	SchedulerBatches  uint64
	SchedulerRequests uint64
	MeanBatchRequests float64
	MeanBatchFill     float64
	PaddedTokens      uint64
	PaddingRatio      float64
	TokensPerSecond   float64
	DeviceBusyShare   float64
	DeviceBusyUs      int64
	UptimeUs          int64
	QueueCapacity     int64
	CompletedByStatus [cStatusSlots]uint64
	RejectedByStatus  [cStatusSlots]uint64
}

// cEngineStatsV1Size is RAPTOR_ENGINE_STATS_V1_SIZE: older libraries accept
// only it.
var cEngineStatsV1Size = unsafe.Offsetof(cEngineStats{}.QueueLatencyP50Us)

type cSubmitOptions struct {
	StructSize     uintptr
	Priority       int32
	DeadlineUs     int64
	BlockTimeoutUs int64
}

type cModelInfo struct {
	StructSize        uintptr
	Family            int32
	VocabSize         int32
	HiddenSize        int32
	NumLayers         int32
	NumHeads          int32
	IntermediateSize  int32
	MaxPositions      int32
	MaxSequenceLength int32
	TypeVocabSize     int32
	Activation        int32
	Attention         int32
	BlockSize         int32
	RandomBlocks      int32
	PositionOffset    int32
	PadTokenID        int32
	WeightDType       int32
	HasPooler         int32
	HasTokenizer      int32
	LayerNormEps      float32
	HeadKind          int32 // appended: RAPTOR_HEAD_*
	NumLabels         int32
}

type cBatch struct {
	StructSize   uintptr
	TokenIDs     *int32
	NumTokens    uintptr
	CuSeqlens    *int32
	NumSeqs      uintptr
	TokenTypeIDs *int32
	Seeds        *uint64
}

type cOutput struct {
	StructSize  uintptr
	Memory      int32
	DType       int32
	Hidden      unsafe.Pointer
	HiddenBytes uintptr
	Pooled      unsafe.Pointer
	PooledBytes uintptr
	Pooling     int32
	Normalize   int32
	Logits      unsafe.Pointer // appended: task-head logits, always float32
	LogitsBytes uintptr
}

// C enum values (raptor.h).
const (
	cPoolingCLS    = 0
	cPoolingMean   = 1
	cPoolingPooler = 2
	cDTypeFP32     = 0
	cStatusSlots   = 32 // RAPTOR_STATUS_SLOTS
)
