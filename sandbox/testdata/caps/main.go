// Command caps is a test plugin for the sandbox's capability grants: what a guest can see of
// the environment, files, clocks, randomness and host functions. Build from the repository root:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-buildid= -o sandbox/testdata/caps/caps.wasm ./sandbox/testdata/caps
package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

func init() {
	sdk.Handle("env", func([]byte) ([]byte, error) {
		return []byte(strings.Join(os.Environ(), "\n")), nil
	})
	sdk.Handle("args", func([]byte) ([]byte, error) {
		return []byte(strconv.Itoa(len(os.Args))), nil
	})
	sdk.Handle("read", func(in []byte) ([]byte, error) {
		return os.ReadFile(string(in))
	})
	sdk.Handle("write", func(in []byte) ([]byte, error) {
		return nil, os.WriteFile(string(in), []byte("x"), 0o644)
	})
	sdk.Handle("now", func([]byte) ([]byte, error) {
		return []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), nil
	})
	sdk.Handle("sleep", func(in []byte) ([]byte, error) {
		d, err := time.ParseDuration(string(in))
		if err != nil {
			return nil, sdk.InvalidInput(err)
		}
		time.Sleep(d)
		return nil, nil
	})
	sdk.Handle("random", func([]byte) ([]byte, error) {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(b)), nil
	})
	// host: input "name\ninput", calls the host function name; a failure's text is the
	// handler's error, prefixed "denied: " or "failed: ".
	sdk.Handle("host", func(in []byte) ([]byte, error) {
		name, arg, _ := strings.Cut(string(in), "\n")
		out, err := sdk.HostCall(name, []byte(arg))
		var hf *sdk.HostFuncError
		switch {
		case errors.Is(err, sdk.ErrHostFuncDenied):
			return nil, fmt.Errorf("denied: %s", name)
		case errors.As(err, &hf):
			return nil, fmt.Errorf("failed: %s", hf.Message)
		}
		return out, err
	})
	sdk.Handle("stderr", func(in []byte) ([]byte, error) {
		_, err := fmt.Fprintf(os.Stderr, "%s\n", in)
		return nil, err
	})
}

func main() {}
