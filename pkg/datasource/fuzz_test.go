package datasource

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// fuzzClaim is the claim FuzzRef builds: a claim "copy" in claimNS with the
// dataSourceRef and dataSource the fuzzer chose (a field is nil unless its
// "set" flag is true).
type fuzzClaim struct {
	claimNS                 string
	hasRef                  bool
	refGroup                string
	refGroupSet             bool
	refKind, refName, refNS string
	refNSSet                bool
	hasDS                   bool
	dsGroup                 string
	dsGroupSet              bool
	dsKind, dsName          string

	claim *v1.PersistentVolumeClaim
	// want* is the reference RefOf should return.
	wantNamespace, wantGroup, wantKind, wantName string
	// referenceWasWrittenAtAll: either field is set.
	referenceWasWrittenAtAll bool
	// crossNamespaceWasWritten: dataSourceRef.namespace names another namespace.
	crossNamespaceWasWritten bool
}

func (c *fuzzClaim) build() {
	c.claim = &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: c.claimNS, Name: "copy", UID: "uid-copy"}}
	c.wantNamespace = c.claimNS
	if c.hasDS {
		ds := &v1.TypedLocalObjectReference{Kind: c.dsKind, Name: c.dsName}
		if c.dsGroupSet {
			ds.APIGroup = &c.dsGroup
			c.wantGroup = c.dsGroup
		}
		c.claim.Spec.DataSource = ds
		c.wantKind, c.wantName = c.dsKind, c.dsName
	}
	if c.hasRef {
		ref := &v1.TypedObjectReference{Kind: c.refKind, Name: c.refName}
		c.wantGroup = ""
		if c.refGroupSet {
			ref.APIGroup = &c.refGroup
			c.wantGroup = c.refGroup
		}
		if c.refNSSet {
			ref.Namespace = &c.refNS
			if c.refNS != "" {
				c.wantNamespace = c.refNS
			}
		}
		c.claim.Spec.DataSourceRef = ref
		c.wantKind, c.wantName = c.refKind, c.refName
	}
	c.referenceWasWrittenAtAll = c.hasRef || c.hasDS
	c.crossNamespaceWasWritten = c.hasRef && c.refNSSet && c.refNS != "" && c.refNS != c.claimNS
}

// FuzzRef builds claims with arbitrary dataSource and dataSourceRef fields
// (empty names, unknown kinds, nil apiGroup, odd namespaces) and checks the
// parser and the resolver on them: nothing panics; the reference is read
// from dataSourceRef, else dataSource, in the claim's namespace unless
// dataSourceRef names another; a claim is cross-namespace, and a grant is
// consulted, only when dataSourceRef names a namespace other than its own;
// unknown kinds are never Handled and never resolved; a reference Validate
// refuses is refused before anything is read or decided.
func FuzzRef(f *testing.F) {
	f.Add("dev", true, SnapshotGroup, true, SnapshotKind, "nightly", "prod", true, false, "", false, "", "", true, true)
	f.Fuzz(func(t *testing.T, claimNS string, hasRef bool, refGroup string, refGroupSet bool, refKind, refName, refNS string, refNSSet bool,
		hasDS bool, dsGroup string, dsGroupSet bool, dsKind, dsName string, gateOn, granted bool) {
		c := &fuzzClaim{claimNS: claimNS, hasRef: hasRef, refGroup: refGroup, refGroupSet: refGroupSet, refKind: refKind, refName: refName,
			refNS: refNS, refNSSet: refNSSet, hasDS: hasDS, dsGroup: dsGroup, dsGroupSet: dsGroupSet, dsKind: dsKind, dsName: dsName}
		c.build()

		ref, ok := RefOf(c.claim)
		if ok != c.referenceWasWrittenAtAll {
			t.Fatalf("RefOf ok = %v for dataSourceRef %v, dataSource %v", ok, c.claim.Spec.DataSourceRef, c.claim.Spec.DataSource)
		}
		if !ok {
			if ref != (Ref{}) {
				t.Fatalf("RefOf returned %+v without a data source", ref)
			}
		} else if want := (Ref{Group: c.wantGroup, Kind: c.wantKind, Namespace: c.wantNamespace, Name: c.wantName}); ref != want {
			t.Fatalf("RefOf = %+v, want %+v", ref, want)
		}
		if cross := ok && ref.CrossNamespace(c.claim); cross != c.crossNamespaceWasWritten {
			t.Fatalf("CrossNamespace = %v for %+v of a claim in %q (dataSourceRef.namespace written: %v)", cross, ref, claimNS, c.crossNamespaceWasWritten)
		}
		if ref.Handled() != ((ref.Group == SnapshotGroup && ref.Kind == SnapshotKind) || (ref.Group == "" && ref.Kind == ClaimKind)) {
			t.Fatalf("Handled = %v for group %q kind %q", ref.Handled(), ref.Group, ref.Kind)
		}
		if !strings.Contains(ref.Key(), ref.Kind) || !strings.Contains(ref.String(), ref.Name) {
			t.Fatalf("Key %q / String %q do not name %+v", ref.Key(), ref.String(), ref)
		}
		verr := ref.Validate()
		if verr != nil {
			if e, isErr := AsError(verr); !isErr || e.Kind != Malformed || e.Reason == "" || e.Message == "" {
				t.Fatalf("Validate(%+v) = %#v, want a Malformed *Error with reason and message", ref, verr)
			}
		} else if ok && ref.Handled() {
			if errs := validation.IsDNS1123Subdomain(ref.Name); len(errs) > 0 {
				t.Fatalf("Validate accepted %+v, whose name is no object name: %v", ref, errs)
			}
		}
		if verr == nil && (ref.Group == "core" || (ref.Group == SnapshotGroup && ref.Kind != SnapshotKind && strings.EqualFold(ref.Kind, SnapshotKind))) {
			t.Fatalf("Validate accepted %+v, which only looks like a source of ours", ref)
		}

		r, reads := newResolver(t, world{})
		grants := referencegrant.NewFake()
		r.CrossNamespace, r.Grants = gateOn, grants
		gref := referencegrant.Reference{FromKind: ClaimKind, FromNamespace: claimNS,
			ToGroup: ref.Group, ToKind: ref.Kind, ToNamespace: ref.Namespace, ToName: ref.Name}
		if granted {
			grants.Allow(gref, "fuzz-grant")
		}
		src, err := r.Resolve(c.claim, Request{Bytes: 1 << 30, Mode: v1.PersistentVolumeFilesystem})
		checked := grants.Checked()
		if len(checked) > 0 && !c.crossNamespaceWasWritten {
			t.Fatalf("grants were consulted (%+v) for a claim whose dataSourceRef names no other namespace (%+v)", checked, ref)
		}
		switch {
		case !ok || (verr == nil && !ref.Handled()):
			if src != nil || err != nil || len(checked) > 0 || len(reads.reads()) > 0 {
				t.Fatalf("Resolve(%+v) = %v, %v, checked %v, read %v; want nothing done for a claim without a source of ours",
					ref, src, err, checked, reads.reads())
			}
		case verr != nil:
			if e, isErr := AsError(err); !isErr || e.Kind != Malformed || src != nil || len(checked) > 0 || len(reads.reads()) > 0 {
				t.Fatalf("Resolve(%+v) = %v, %v, checked %v, read %v; want it refused as malformed before anything is decided or read",
					ref, src, err, checked, reads.reads())
			}
		case c.crossNamespaceWasWritten && !(gateOn && granted):
			if e, isErr := AsError(err); !isErr || e.Kind != Denied || len(reads.reads()) > 0 {
				t.Fatalf("Resolve(%+v) with gate %v and no grant = %v, read %v; want Denied before anything is read", ref, gateOn, err, reads.reads())
			}
		default:
			// Allowed or same namespace: the empty caches hold no source.
			if e, isErr := AsError(err); !isErr || e.Kind != Invalid || src != nil {
				t.Fatalf("Resolve(%+v) = %v, %v; want an Invalid error (no such source)", ref, src, err)
			}
		}
		if c.crossNamespaceWasWritten && gateOn && verr == nil && ref.Handled() && (len(checked) == 0 || checked[0] != gref) {
			t.Fatalf("Resolve(%+v) checked %+v, want %+v first", ref, checked, gref)
		}
	})
}
