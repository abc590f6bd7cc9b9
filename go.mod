module github.com/raptor-infer/raptor

go 1.26
