package main

import (
	"fmt"
	"testing"
)

// benchInputs are check inputs of the common shapes: a key within its budget, a key over it
// (now_ms stays put, so the bucket empties and stays empty), a cost.
var benchInputs = []string{
	`{"key":"alice","now_ms":1000}`,
	`{"key":"alice","cost":2.5,"now_ms":1000}`,
	`{"key":"api-key-0123456789abcdef","cost":0,"now_ms":1000}`,
}

func BenchmarkCheck(b *testing.B) {
	for i, in := range benchInputs {
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			input := []byte(in)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := check(input); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
