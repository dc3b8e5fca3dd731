// Command terway is the CNI plugin binary the container runtime executes
// from its CNI bin directory. All the work happens in the terway agent; this
// forwards each command to it over a unix socket (see package cni/plugin).
package main

import (
	"os"

	"github.com/terway-reconciler/terway/cni/plugin"
)

func main() { os.Exit(plugin.Main()) }
