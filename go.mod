module github.com/raptor-infer/raptor

go 1.26.0

require (
	github.com/ebitengine/purego v0.11.3
	github.com/google/flatbuffers v25.12.19+incompatible
	github.com/klauspost/compress v1.20.4
	golang.org/x/text v0.44.0 // indirect
)
