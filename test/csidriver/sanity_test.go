package csidriver

import (
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

// TestSanity runs the csi-test sanity suite against the in-process driver.
// The "Node Service" suite is skipped: the driver has no real Node service.
// Controller and Identity suites must pass completely.
func TestSanity(t *testing.T) {
	td := startDriver(t, Config{
		// Sanity creates many 10Gi volumes; make sure capacity never
		// becomes the reason for a failure.
		Capacity: "10Ti",
		// With a topology, the VOLUME_ACCESSIBILITY_CONSTRAINTS code
		// paths are exercised too.
		Topology: map[string]string{"topology.crossns.io/zone": "zone-a"},
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = td.endpoint
	// The defaults live directly in /tmp, shared with anything else on
	// the machine; sanity insists on creating them itself.
	base := t.TempDir()
	cfg.TargetPath = filepath.Join(base, "target")
	cfg.StagingPath = filepath.Join(base, "staging")
	// With MODIFY_VOLUME, sanity creates and modifies volumes with these
	// (and checks that an unknown key is refused).
	cfg.TestVolumeMutableParameters = map[string]string{MutableParameterKeys[0]: "3000"}

	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()

	gomega.RegisterFailHandler(ginkgo.Fail)
	suiteCfg, reporterCfg := ginkgo.GinkgoConfiguration()
	// Ginkgo matches skip patterns against "<suite description> <spec text>".
	const suite = "CSI sanity identity and controller"
	suiteCfg.SkipStrings = append(suiteCfg.SkipStrings, "^"+suite+" Node Service ")
	ginkgo.RunSpecs(t, suite, suiteCfg, reporterCfg)
}
