// Command forwarder builds the terway CNI binary, the C forwarder of
// package cni/forward, with the flags every build of it uses:
//
//	go run ./hack/forwarder -o bin/terway
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/terway-reconciler/terway/cni/forward"
)

func main() {
	out := flag.String("o", "bin/terway", "binary to write")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH to build for")
	flag.Parse()
	if err := forward.Build(context.Background(), *out, *arch); err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
}
