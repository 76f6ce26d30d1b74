// Command etcd is a thin wrapper that builds the etcd server from its Go module
// so the local test bed needs no prebuilt binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
