package main

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// buildConfig returns the client config and where it came from, in this
// order: --kubeconfig, else the KUBECONFIG env variable (a single path), else
// the in-cluster service account. --master, when set, overrides the server
// of any of them (client-go's BuildConfigFromFlags, as upstream). Upstream reads
// the same four sources but lets KUBECONFIG replace --kubeconfig when both are
// set; here the flag wins, so an exported KUBECONFIG in a shell (or a test
// bed's environment) cannot silently swap the identity a manifest chose.
func buildConfig(master, kubeconfig string, getenv func(string) string) (*rest.Config, string, error) {
	source := "--kubeconfig " + kubeconfig
	if kubeconfig == "" {
		if kubeconfig = getenv("KUBECONFIG"); kubeconfig != "" {
			source = "KUBECONFIG " + kubeconfig
		}
	}
	if master != "" {
		if kubeconfig == "" {
			source = "--master " + master
		} else {
			source += " with --master " + master
		}
	}
	if master == "" && kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		return cfg, "in-cluster config", err
	}
	cfg, err := clientcmd.BuildConfigFromFlags(master, kubeconfig)
	return cfg, source, err
}
