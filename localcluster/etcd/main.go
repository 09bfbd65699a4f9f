// Command etcd starts etcd's own server entry point. etcd's root module (which
// holds the upstream main) replaces its submodules with local paths, so it
// cannot be built with 'go install'.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
