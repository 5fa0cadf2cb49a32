// Command hello is the Go SDK's hello plugin: handler "hello" answers "hello, <input>".
// Build and run it from the repository root:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-buildid= -o hello.wasm ./sdk/go/examples/hello
//	go run ./cmd/wasmvisor call hello.wasm hello --input world
package main

import (
	"errors"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

func init() {
	sdk.Handle("hello", func(input []byte) ([]byte, error) {
		if len(input) == 0 {
			return nil, sdk.InvalidInput(errors.New("empty name"))
		}
		return append([]byte("hello, "), input...), nil
	})
}

func main() {} // never runs in a reactor: register in init
