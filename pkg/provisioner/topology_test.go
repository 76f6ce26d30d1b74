package provisioner

import (
	"errors"
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/topology"
)

// zoneRequirement requires zone z first, then the others.
func zoneRequirement(z string, others ...string) *csi.TopologyRequirement {
	r := &csi.TopologyRequirement{}
	for _, zone := range append([]string{z}, others...) {
		r.Requisite = append(r.Requisite, &csi.Topology{Segments: map[string]string{"zone": zone}})
		r.Preferred = append(r.Preferred, &csi.Topology{Segments: map[string]string{"zone": zone}})
	}
	return r
}

// topoAnswer is one answer of scriptedTopology.
type topoAnswer struct {
	req *csi.TopologyRequirement
	err error
}

// scriptedTopology answers Requirements from a script, the last answer
// repeating, and counts the calls.
type scriptedTopology struct {
	script []topoAnswer
	calls  int
}

func (s *scriptedTopology) Requirements(*storagev1.StorageClass, *v1.Node, string) (*csi.TopologyRequirement, error) {
	a := s.script[min(s.calls, len(s.script)-1)]
	s.calls++
	return a.req, a.err
}

func node(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

var errCSINodeGone = &topology.NodeMissingError{Node: "node-a", Kind: "CSINode"}

// TestTopologyKeptAcrossRetries: once computed, a claim's accessibility
// requirements are what every retry sends until its provisioning ends; a
// call in flight is always repeated exactly, whatever happened to the node.
func TestTopologyKeptAcrossRetries(t *testing.T) {
	withSecret := map[string]string{
		"csi.storage.k8s.io/provisioner-secret-name":      "creds",
		"csi.storage.k8s.io/provisioner-secret-namespace": "secrets",
	}
	tests := []struct {
		name string
		// class parameters; withSecret makes the first attempt fail before
		// CreateVolume (the secret is created after it)
		params map[string]string
		// first is the driver's answer to the first attempt (when reached)
		first createFunc
		// topology answers the first and later computations
		topology []topoAnswer
		// secondNode is the selected node of the second attempt
		secondNode string
		// wantTopology is what the second attempt's CreateVolume asks for
		wantTopology *csi.TopologyRequirement
		wantComputed int
	}{
		{
			name:     "call in flight, then the CSINode is gone: the same call again",
			first:    createFails(codes.DeadlineExceeded),
			topology: []topoAnswer{{req: zoneRequirement("a", "b")}, {err: errCSINodeGone}},
			// No reschedule: the volume may exist already.
			secondNode: "node-a", wantTopology: zoneRequirement("a", "b"), wantComputed: 1,
		},
		{
			name:       "call in flight, then another node: the same call again",
			first:      createFails(codes.Aborted),
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {req: zoneRequirement("b", "a")}},
			secondNode: "node-b", wantTopology: zoneRequirement("a", "b"), wantComputed: 1,
		},
		{
			name:       "no call yet, segments changed meanwhile: the first requirements",
			params:     withSecret,
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {req: zoneRequirement("a", "b", "c")}},
			secondNode: "node-a", wantTopology: zoneRequirement("a", "b"), wantComputed: 1,
		},
		{
			name:       "no call yet, then the CSINode is gone: the first requirements",
			params:     withSecret,
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {err: errCSINodeGone}},
			secondNode: "node-a", wantTopology: zoneRequirement("a", "b"), wantComputed: 1,
		},
		{
			name:       "no call yet, another node selected: computed for it",
			params:     withSecret,
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {req: zoneRequirement("b", "a")}},
			secondNode: "node-b", wantTopology: zoneRequirement("b", "a"), wantComputed: 2,
		},
		{
			name:       "final failure forgets them",
			first:      createFails(codes.InvalidArgument),
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {req: zoneRequirement("a", "b", "c")}},
			secondNode: "node-a", wantTopology: zoneRequirement("a", "b", "c"), wantComputed: 2,
		},
		{
			name:       "reschedule forgets them",
			first:      createFails(codes.ResourceExhausted),
			topology:   []topoAnswer{{req: zoneRequirement("a", "b")}, {req: zoneRequirement("b", "a")}},
			secondNode: "node-b", wantTopology: zoneRequirement("b", "a"), wantComputed: 2,
		},
		{
			name:       "a failed computation is not kept",
			params:     withSecret,
			topology:   []topoAnswer{{err: errors.New(`node "node-a" has no label "zone"`)}, {req: zoneRequirement("a")}},
			secondNode: "node-a", wantTopology: zoneRequirement("a"), wantComputed: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			topo := &scriptedTopology{script: tc.topology}
			e.p.Topology = topo
			e.p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] = true
			if tc.first != nil {
				e.csi.script = []createFunc{tc.first, createOK()}
			}
			claim, class := newClaim("dev", "data"), newClass(tc.params)

			if pv, _, _ := e.provisionOn(claim, class, node("node-a")); pv != nil {
				t.Fatalf("first attempt made PV %s; the case needs it to fail", pv.Name)
			}
			if tc.params != nil {
				secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "secrets", Name: "creds"}, Data: map[string][]byte{"k": []byte("v")}}
				if _, err := e.client.CoreV1().Secrets("secrets").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			pv, state, err := e.provisionOn(claim, class, node(tc.secondNode))
			assertErr(t, err, "")
			if pv == nil || state != controller.ProvisioningFinished {
				t.Fatalf("second attempt: PV %v, state %s; want a PV", pv, state)
			}
			last := e.csi.creates[len(e.csi.creates)-1]
			if !proto.Equal(last.AccessibilityRequirements, tc.wantTopology) {
				t.Errorf("second CreateVolume asks for %v, want %v", last.AccessibilityRequirements, tc.wantTopology)
			}
			if topo.calls != tc.wantComputed {
				t.Errorf("requirements computed %d times, want %d", topo.calls, tc.wantComputed)
			}
			if n := e.p.topologies.len(); n != 0 {
				t.Errorf("%d claims' requirements kept after the PV was made, want none", n)
			}
		})
	}
}

// TestMissingSelectedNodeReschedules: without the selected node's Node or
// CSINode the claim goes back to the scheduler (the loop removes the
// selected-node annotation) instead of failing; nothing reaches the driver.
func TestMissingSelectedNodeReschedules(t *testing.T) {
	tests := []struct {
		name     string
		topoErr  error
		selected bool
		want     controller.ProvisioningState
		wantErr  string
	}{
		{name: "CSINode missing", topoErr: errCSINodeGone, selected: true, want: controller.ProvisioningReschedule,
			wantErr: `CSINode "node-a" does not exist`},
		{name: "Node missing", topoErr: &topology.NodeMissingError{Node: "node-a", Kind: "Node"}, selected: true, want: controller.ProvisioningReschedule,
			wantErr: `Node "node-a" does not exist`},
		{name: "missing label: the node stays, the user must fix it", topoErr: errors.New(`node "node-a" has no label "zone"`), selected: true,
			want: controller.ProvisioningFinished, wantErr: `has no label "zone"`},
		{name: "without a selected node nothing is rescheduled", topoErr: fmt.Errorf("listing: %w", errCSINodeGone),
			want: controller.ProvisioningFinished, wantErr: "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.Topology = &scriptedTopology{script: []topoAnswer{{err: tc.topoErr}}}
			e.p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] = true
			var selected *v1.Node
			if tc.selected {
				selected = node("node-a")
			}
			pv, state, err := e.provisionOn(newClaim("dev", "data"), newClass(nil), selected)
			if state != tc.want {
				t.Errorf("state = %s, want %s", state, tc.want)
			}
			assertErr(t, err, tc.wantErr)
			if isIgnored(err) {
				t.Errorf("error is an IgnoredError; the loop would neither report nor reschedule it")
			}
			if pv != nil {
				t.Errorf("got PV %s, want none", pv.Name)
			}
			e.assertNoCreate(t)
			e.assertEvents(t) // the loop sends ProvisioningFailed with err
		})
	}
}

// TestTopologyMemo: the memo hands out and keeps copies (a caller reordering
// segments must not change the next retry, the bug upstream 6.1.1 fixed), and
// stays bounded: claims that are gone go first, then the oldest.
func TestTopologyMemo(t *testing.T) {
	claim := func(name string) *v1.PersistentVolumeClaim {
		return &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: name, UID: types.UID("uid-" + name)}}
	}
	noneGone := func(*v1.PersistentVolumeClaim) bool { return false }

	t.Run("copies in and out", func(t *testing.T) {
		m := &topologyMemo{}
		req := zoneRequirement("a", "b", "c")
		m.put(claim("x"), "node-a", req, noneGone)
		req.Preferred[0], req.Preferred[2] = req.Preferred[2], req.Preferred[0]
		got, ok := m.get("uid-x", "node-a")
		if !ok || !proto.Equal(got, zoneRequirement("a", "b", "c")) {
			t.Fatalf("get = %v, %v; want the requirements as put", got, ok)
		}
		got.Preferred = append(got.Preferred[1:], got.Preferred[0])
		got.Requisite[0].Segments["zone"] = "z"
		if again, _ := m.get("uid-x", "node-a"); !proto.Equal(again, zoneRequirement("a", "b", "c")) {
			t.Errorf("after the caller changed its copy, get = %v", again)
		}
		if _, ok := m.get("uid-x", "node-b"); ok {
			t.Errorf("requirements of node-a handed out for node-b")
		}
	})

	tests := []struct {
		name string
		gone map[string]bool
		// wantKept are the claims remembered after adding "d" to a full
		// memo of a, b, c (added in that order)
		wantKept []string
	}{
		{name: "full, none gone: the oldest goes", wantKept: []string{"b", "c", "d"}},
		{name: "full, claims gone: they go", gone: map[string]bool{"b": true, "c": true}, wantKept: []string{"a", "d"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &topologyMemo{max: 3}
			gone := func(c *v1.PersistentVolumeClaim) bool { return tc.gone[c.Name] }
			for _, n := range []string{"a", "b", "c", "d"} {
				m.put(claim(n), "node", zoneRequirement(n), gone)
			}
			var kept []string
			for _, n := range []string{"a", "b", "c", "d"} {
				if _, ok := m.get(types.UID("uid-"+n), "node"); ok {
					kept = append(kept, n)
				}
			}
			if fmt.Sprint(kept) != fmt.Sprint(tc.wantKept) {
				t.Errorf("kept %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

// TestDeletedClaimForgetsTopology: a claim deleted while its call was in
// flight is settled, and its requirements are forgotten.
func TestDeletedClaimForgetsTopology(t *testing.T) {
	e := newEnv(t)
	e.p.Topology = &scriptedTopology{script: []topoAnswer{{req: zoneRequirement("a")}}}
	e.p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] = true
	e.csi.script = []createFunc{createFails(codes.DeadlineExceeded), createOK()}
	claim, class := newClaim("dev", "data"), newClass(nil)
	if _, state, _ := e.provisionOn(claim, class, node("node-a")); state != controller.ProvisioningInBackground {
		t.Fatalf("first attempt: state %s, want InBackground", state)
	}
	if n := e.p.topologies.len(); n != 1 {
		t.Fatalf("%d claims' requirements kept while the call is in flight, want 1", n)
	}
	e.p.Claims = corelisters.NewPersistentVolumeClaimLister(e.claims) // the claim is not in it: deleted
	if _, state, err := e.provisionOn(claim, class, node("node-a")); state != controller.ProvisioningFinished || !isIgnored(err) {
		t.Fatalf("state %s, err %v; want Finished, IgnoredError", state, err)
	}
	if n := e.p.topologies.len(); n != 0 {
		t.Errorf("%d claims' requirements kept after the claim was deleted, want none", n)
	}
}
