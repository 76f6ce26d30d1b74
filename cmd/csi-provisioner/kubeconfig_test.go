package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildConfig(t *testing.T) {
	dir := t.TempDir()
	writeKubeconfig := func(name, server string) string {
		p := filepath.Join(dir, name)
		body := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: " + server + "}\n" +
			"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagFile := writeKubeconfig("flag", "https://from-flag:6443")
	envFile := writeKubeconfig("env", "https://from-env:6443")
	// No service account in the test: in-cluster config must fail, telling
	// the source apart from the others.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	tests := []struct {
		name                    string
		master, kubeconfig, env string
		wantHost, wantSource    string
		wantErr                 bool
	}{
		{name: "--kubeconfig", kubeconfig: flagFile, wantHost: "https://from-flag:6443", wantSource: "--kubeconfig " + flagFile},
		{name: "KUBECONFIG when --kubeconfig is empty", env: envFile, wantHost: "https://from-env:6443", wantSource: "KUBECONFIG " + envFile},
		{name: "--kubeconfig wins over KUBECONFIG", kubeconfig: flagFile, env: envFile, wantHost: "https://from-flag:6443", wantSource: "--kubeconfig " + flagFile},
		{name: "--master overrides the kubeconfig's server", master: "https://master:6443", kubeconfig: flagFile,
			wantHost: "https://master:6443", wantSource: "--kubeconfig " + flagFile + " with --master https://master:6443"},
		{name: "--master with KUBECONFIG", master: "https://master:6443", env: envFile,
			wantHost: "https://master:6443", wantSource: "KUBECONFIG " + envFile + " with --master https://master:6443"},
		{name: "--master alone", master: "https://master:6443", wantHost: "https://master:6443", wantSource: "--master https://master:6443"},
		{name: "nothing: in-cluster config (fails outside a pod)", wantSource: "in-cluster config", wantErr: true},
		{name: "unreadable kubeconfig", kubeconfig: filepath.Join(dir, "none"), wantSource: "--kubeconfig " + filepath.Join(dir, "none"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "KUBECONFIG" {
					return tc.env
				}
				return ""
			}
			cfg, source, err := buildConfig(tc.master, tc.kubeconfig, getenv)
			if source != tc.wantSource {
				t.Errorf("source = %q, want %q", source, tc.wantSource)
			}
			if tc.wantErr {
				if err == nil {
					t.Errorf("got config for %s, want an error", cfg.Host)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !strings.HasPrefix(cfg.Host, tc.wantHost) {
				t.Errorf("host = %q, want %q", cfg.Host, tc.wantHost)
			}
		})
	}
}
