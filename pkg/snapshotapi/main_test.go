package snapshotapi

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The snapshot fake clientset never sends the bookmark that ends a
	// streaming list, so its informers would wait for it for ever: list and
	// watch the classic way, as against an older API server. client-go reads
	// this variable the first time a gate is asked, after this.
	if err := os.Setenv("KUBE_FEATURE_WatchListClient", "false"); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}
