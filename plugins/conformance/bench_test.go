package conformance_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// BenchmarkLanguages measures, for the conformance plugin of each language, a fresh instance
// (Instantiate + Close) and a call (echo of 64 bytes on a warm instance), in one run.
func BenchmarkLanguages(b *testing.B) {
	ctx := context.Background()
	in := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	for _, lang := range languages {
		wasm, err := os.ReadFile(filepath.FromSlash(lang.path))
		if err != nil {
			b.Fatal(err)
		}
		eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir))
		if err != nil {
			b.Fatal(err)
		}
		mod, err := eng.Compile(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 256}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(lang.name+"/instantiate", func(b *testing.B) {
			for b.Loop() {
				i, err := mod.Instantiate(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				_ = i.Close(ctx)
			}
		})
		b.Run(lang.name+"/call", func(b *testing.B) {
			i, err := mod.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer i.Close(ctx)
			dst := make([]byte, 0, 64)
			for b.Loop() {
				if dst, err = i.CallAppend(ctx, "echo", in, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = eng.Close(ctx)
	}
}
