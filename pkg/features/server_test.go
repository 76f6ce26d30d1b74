package features

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/component-base/featuregate"
)

func TestDisableUnserved(t *testing.T) {
	storageV1 := func(resources ...string) *metav1.APIResourceList {
		l := &metav1.APIResourceList{GroupVersion: "storage.k8s.io/v1"}
		for _, r := range resources {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: r})
		}
		return l
	}
	tests := []struct {
		name      string
		gates     string // --feature-gates value set first
		resources []*metav1.APIResourceList
		failWith  error // discovery error
		wantOff   []featuregate.Feature
		wantVAC   bool
		wantErr   string
	}{
		{name: "served: stays on", resources: []*metav1.APIResourceList{storageV1("storageclasses", "volumeattributesclasses")}, wantVAC: true},
		{name: "storage.k8s.io/v1 without the resource: off", resources: []*metav1.APIResourceList{storageV1("storageclasses")},
			wantOff: []featuregate.Feature{VolumeAttributesClass}},
		{name: "group version not served at all: off", resources: []*metav1.APIResourceList{{GroupVersion: "v1"}},
			wantOff: []featuregate.Feature{VolumeAttributesClass}},
		{name: "gate already off: discovery not asked", gates: "VolumeAttributesClass=false", failWith: errors.New("must not be called")},
		{name: "discovery fails: error, gate unchanged", failWith: errors.New("connection refused"),
			wantVAC: true, wantErr: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateWithDefaults(t)
			if tc.gates != "" {
				if err := g.Set(tc.gates); err != nil {
					t.Fatal(err)
				}
			}
			fake := &k8stesting.Fake{Resources: tc.resources}
			if tc.failWith != nil {
				fake.AddReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.failWith })
			}
			off, err := disableUnserved(g, &fakediscovery.FakeDiscovery{Fake: fake})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "VolumeAttributesClass") {
					t.Errorf("error = %v, want one naming the gate and %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("error = %v", err)
			}
			if !reflect.DeepEqual(off, tc.wantOff) {
				t.Errorf("turned off %v, want %v", off, tc.wantOff)
			}
			if got := g.Enabled(VolumeAttributesClass); got != tc.wantVAC {
				t.Errorf("VolumeAttributesClass = %v, want %v", got, tc.wantVAC)
			}
		})
	}
}
