package main

import (
	"fmt"
	"testing"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// benchInputs are validate inputs of the common shapes under ordersConfig: an allowed order
// with a JSON body, a GET without body, a denied request.
var benchInputs = []string{
	`{"method":"POST","path":"/api/orders","headers":{"Content-Type":"application/json","X-Request-Id":"r-1"},"body_json":{"customer_id":"c-42","items":[{"sku":"A1","qty":2}],"currency":"EUR","total":19.9}}`,
	`{"method":"GET","path":"/api/orders/7?x=1","headers":{"content-type":"text/plain","x-request-id":"r-3"}}`,
	`{"method":"PUT","path":"/admin","headers":{"content-type":"text/plain"},"body_size":4096}`,
}

func BenchmarkValidate(b *testing.B) {
	b.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	policy = mustPolicy(sdk.NewConfigView(ordersConfig))
	for i, in := range benchInputs {
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			input := []byte(in)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := validate(input); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
