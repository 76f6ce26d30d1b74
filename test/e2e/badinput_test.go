package e2e

// Issue 10 item 3: every kind of malformed object a user can write gets a
// clear Event and creates nothing, and the sidecar goes on provisioning for
// everyone else (DESIGN.md invariant 5, "no crash on input"). Inputs that
// kube-apiserver itself refuses are checked to be refused there: the user
// sees the error at create, and the sidecar never sees the object.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/crossns/external-provisioner/test/cluster"
)

// sidecarWatch remembers the sidecar process and how far its log went when a
// test began, to tell at the end that bad input neither crashed nor
// restarted it.
type sidecarWatch struct {
	pid       int
	logOffset int64
}

func watchSidecar(t *testing.T) *sidecarWatch {
	t.Helper()
	w := &sidecarWatch{pid: bed.ComponentPID(cluster.Provisioner)}
	if w.pid == 0 {
		t.Fatal("the sidecar is not running")
	}
	if fi, err := os.Stat(bed.LogPath(cluster.Provisioner)); err == nil {
		w.logOffset = fi.Size()
	}
	return w
}

// requireHealthy checks that the sidecar is the process it was, logged no
// panic meanwhile, and still provisions: a plain claim in ns binds.
func (w *sidecarWatch) requireHealthy(t *testing.T, c *clients, ns string) {
	t.Helper()
	createClaim(t, c, newClaim(ns, "good-after-bad-input", "1Mi"))
	waitBound(t, c, ns, "good-after-bad-input")
	if pid := bed.ComponentPID(cluster.Provisioner); pid != w.pid {
		t.Errorf("the sidecar's PID is %d, it was %d when the test began: it crashed or was restarted", pid, w.pid)
	}
	log, err := os.ReadFile(bed.LogPath(cluster.Provisioner))
	if err != nil {
		t.Fatalf("reading the sidecar's log: %v", err)
	}
	if int64(len(log)) >= w.logOffset {
		log = log[w.logOffset:]
	}
	for _, word := range []string{"panic:", "Observed a panic"} {
		if i := strings.Index(string(log), word); i >= 0 {
			t.Errorf("the sidecar logged %q during the test: %s", word, log[i:min(len(log), i+400)])
		}
	}
}

// requireInvalid checks that kube-apiserver refused an object at create as
// invalid, naming the field.
func requireInvalid(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: kube-apiserver accepted it; this test expects its validation to refuse it", what)
		return
	}
	if !apierrors.IsInvalid(err) {
		t.Errorf("%s: create failed with %v, want an Invalid error", what, err)
		return
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the error %q does not name %q", what, err, w)
		}
	}
}

// atLeast returns the time left until deadline, but at least a few seconds:
// the cases of a table are created together and waited for in turn, so a
// table whose Events do not come costs one wait, not one per case.
func atLeast(deadline time.Time) time.Duration { return max(time.Until(deadline), 5*time.Second) }

// badGrant is a ReferenceGrant in the source namespace; from and to are
// filled in per case.
func badGrant(ns, name string, from []gatewayv1beta1.ReferenceGrantFrom, to []gatewayv1beta1.ReferenceGrantTo) *gatewayv1beta1.ReferenceGrant {
	return &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       gatewayv1beta1.ReferenceGrantSpec{From: from, To: to},
	}
}

func grantFrom(group, kind, ns string) gatewayv1beta1.ReferenceGrantFrom {
	return gatewayv1beta1.ReferenceGrantFrom{Group: gatewayv1beta1.Group(group), Kind: gatewayv1beta1.Kind(kind), Namespace: gatewayv1beta1.Namespace(ns)}
}

func grantTo(group, kind, name string) gatewayv1beta1.ReferenceGrantTo {
	to := gatewayv1beta1.ReferenceGrantTo{Group: gatewayv1beta1.Group(group), Kind: gatewayv1beta1.Kind(kind)}
	if name != "-" { // "-": no name, every object of the kind
		to.Name = ptr.To(gatewayv1beta1.ObjectName(name))
	}
	return to
}

// repeatFrom and repeatTo make n entries, the last one given, the others
// for namespaces and snapshots that exist nowhere.
func repeatFrom(n int, last gatewayv1beta1.ReferenceGrantFrom) []gatewayv1beta1.ReferenceGrantFrom {
	out := make([]gatewayv1beta1.ReferenceGrantFrom, 0, n)
	for i := range n - 1 {
		out = append(out, grantFrom("", "PersistentVolumeClaim", fmt.Sprintf("team-%d", i)))
	}
	return append(out, last)
}

func repeatTo(n int, last gatewayv1beta1.ReferenceGrantTo) []gatewayv1beta1.ReferenceGrantTo {
	out := make([]gatewayv1beta1.ReferenceGrantTo, 0, n)
	for i := range n - 1 {
		out = append(out, grantTo(snapshotGroup, "VolumeSnapshot", fmt.Sprintf("snap-%d", i)))
	}
	return append(out, last)
}

// Grants that are malformed, or well-formed but unable to match, allow
// nothing: their claims get ReferenceGrantMissing and the driver never sees
// them. A grant of 16 × 16 entries (the most the API takes) whose last
// entries match does allow, and is used to prove every bad grant was in the
// sidecar's cache before the claims they fail to allow were created.
func TestMalformedGrantsAllowNothing(t *testing.T) {
	c := requireBed(t)
	w := watchSidecar(t)
	ctx := testContext(t)
	prod := createNamespace(t, c, "prod")
	provisionSource(t, c, prod, "db", map[string]string{"a": "b"})
	snapshotOf(t, c, prod, "nightly", "db")
	grants := c.gateway.GatewayV1beta1().ReferenceGrants(prod)
	claimFrom := grantFrom("", "PersistentVolumeClaim", "dev")
	nightly := grantTo(snapshotGroup, "VolumeSnapshot", "nightly")

	// Refused by the CRD's schema: the user sees the error at create.
	for _, tc := range []struct {
		name  string
		grant *gatewayv1beta1.ReferenceGrant
		field string
	}{
		{"empty from", badGrant(prod, "empty-from", []gatewayv1beta1.ReferenceGrantFrom{}, []gatewayv1beta1.ReferenceGrantTo{nightly}), "spec.from"},
		{"empty to", badGrant(prod, "empty-to", []gatewayv1beta1.ReferenceGrantFrom{claimFrom}, []gatewayv1beta1.ReferenceGrantTo{}), "spec.to"},
		{"17 from entries", badGrant(prod, "many-from", repeatFrom(17, claimFrom), []gatewayv1beta1.ReferenceGrantTo{nightly}), "spec.from"},
		{"17 to entries", badGrant(prod, "many-to", []gatewayv1beta1.ReferenceGrantFrom{claimFrom}, repeatTo(17, nightly)), "spec.to"},
		{"to name empty", badGrant(prod, "empty-name", []gatewayv1beta1.ReferenceGrantFrom{claimFrom},
			[]gatewayv1beta1.ReferenceGrantTo{grantTo(snapshotGroup, "VolumeSnapshot", "")}), "spec.to[0].name"},
		{"from namespace in capitals", badGrant(prod, "upper-ns", []gatewayv1beta1.ReferenceGrantFrom{grantFrom("", "PersistentVolumeClaim", "Dev")},
			[]gatewayv1beta1.ReferenceGrantTo{nightly}), "spec.from[0].namespace"},
		{"kind with a space", badGrant(prod, "spaced-kind", []gatewayv1beta1.ReferenceGrantFrom{claimFrom},
			[]gatewayv1beta1.ReferenceGrantTo{grantTo(snapshotGroup, "Volume Snapshot", "nightly")}), "spec.to[0].kind"},
		{"group in capitals", badGrant(prod, "upper-group", []gatewayv1beta1.ReferenceGrantFrom{claimFrom},
			[]gatewayv1beta1.ReferenceGrantTo{grantTo("Snapshot.Storage.K8s.io", "VolumeSnapshot", "nightly")}), "spec.to[0].group"},
		{"grant name with odd characters", badGrant(prod, "allow dev!", []gatewayv1beta1.ReferenceGrantFrom{claimFrom},
			[]gatewayv1beta1.ReferenceGrantTo{nightly}), "metadata.name"},
	} {
		_, err := grants.Create(ctx, tc.grant, metav1.CreateOptions{})
		requireInvalid(t, "grant with "+tc.name, err, tc.field)
	}

	// Accepted by kube-apiserver, but no claim can match them. Each case has
	// a claim namespace of its own ("dev" in the entries is replaced by it).
	cases := []struct {
		name  string
		clone bool // the claim clones prod/db instead of restoring prod/nightly
		from  gatewayv1beta1.ReferenceGrantFrom
		to    []gatewayv1beta1.ReferenceGrantTo
		// sixteen: 16 from and 16 to entries, none for this claim
		sixteen bool
	}{
		{name: "from group core", from: grantFrom("core", "PersistentVolumeClaim", "dev"), to: []gatewayv1beta1.ReferenceGrantTo{nightly}},
		{name: "to group core", clone: true, from: claimFrom, to: []gatewayv1beta1.ReferenceGrantTo{grantTo("core", "PersistentVolumeClaim", "db")}},
		{name: "from kind in lower case", from: grantFrom("", "persistentvolumeclaim", "dev"), to: []gatewayv1beta1.ReferenceGrantTo{nightly}},
		{name: "to kind in lower case", from: claimFrom, to: []gatewayv1beta1.ReferenceGrantTo{grantTo(snapshotGroup, "volumesnapshot", "-")}},
		{name: "to kind of the other source", from: claimFrom, to: []gatewayv1beta1.ReferenceGrantTo{grantTo("", "PersistentVolumeClaim", "-")}},
		{name: "to names with odd characters", from: claimFrom, to: []gatewayv1beta1.ReferenceGrantTo{
			grantTo(snapshotGroup, "VolumeSnapshot", "Nightly"), grantTo(snapshotGroup, "VolumeSnapshot", "nightly "),
			grantTo(snapshotGroup, "VolumeSnapshot", "../nightly"), grantTo(snapshotGroup, "VolumeSnapshot", prod+"/nightly"),
			grantTo(snapshotGroup, "VolumeSnapshot", "*"), grantTo(snapshotGroup, "VolumeSnapshot", "nïghtly")}},
		{name: "16 entries, none for the claim", sixteen: true},
	}
	type pending struct {
		ns  string
		pvc *corev1.PersistentVolumeClaim
	}
	claims := make([]pending, len(cases))
	for i, tc := range cases {
		dev := createNamespace(t, c, "badgrant")
		from := tc.from
		if from.Namespace == "dev" {
			from.Namespace = gatewayv1beta1.Namespace(dev)
		}
		g := badGrant(prod, fmt.Sprintf("case-%d", i), []gatewayv1beta1.ReferenceGrantFrom{from}, tc.to)
		if tc.sixteen {
			g.Spec.From = repeatFrom(16, grantFrom("", "PersistentVolumeClaim", "team-x"))
			g.Spec.To = repeatTo(16, grantTo(snapshotGroup, "VolumeSnapshot", "snap-x"))
		}
		if _, err := grants.Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: creating the grant: %v", tc.name, err)
		}
		pvc := fromSnapshot(newClaim(dev, "copy", "1Mi"), prod, "nightly")
		if tc.clone {
			pvc = fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db")
		}
		claims[i] = pending{ns: dev, pvc: pvc}
	}

	// The largest grant the API takes allows through its last entries. It is
	// created after the bad grants, so once its claim binds, the sidecar's
	// cache holds every one of them (one watch delivers them in order).
	good := createNamespace(t, c, "goodgrant")
	full := badGrant(prod, "sixteen-by-sixteen", repeatFrom(16, grantFrom("", "PersistentVolumeClaim", good)), repeatTo(16, nightly))
	if _, err := grants.Create(ctx, full, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the 16 × 16 grant: %v", err)
	}
	createClaim(t, c, fromSnapshot(newClaim(good, "copy", "1Mi"), prod, "nightly"))
	waitBound(t, c, good, "copy")

	for i := range claims {
		claims[i].pvc = createClaim(t, c, claims[i].pvc)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := claims[i]
			source := "nightly"
			if tc.clone {
				source = "db"
			}
			requireRefused(t, c, p.pvc, "ReferenceGrantMissing", prod, p.ns, source)
			requirePending(t, c, p.ns, p.pvc.Name)
		})
	}
	w.requireHealthy(t, c, good)
}

// Claims whose data source or size is malformed get a Warning saying what is
// wrong (a claim whose source is merely unknown is left to a volume
// populator, as upstream leaves it), and the driver never sees them.
func TestMalformedClaimsAreRefusedWithEvents(t *testing.T) {
	c := requireBed(t)
	w := watchSidecar(t)
	ctx := testContext(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	// Every snapshot and claim of prod may be used from dev, so what refuses
	// the cases below is their own fault, not a missing grant.
	grant(t, c, prod, "allow-snapshots", dev, snapshotGroup, "VolumeSnapshot", "")
	grant(t, c, prod, "allow-claims", dev, "", "PersistentVolumeClaim", "")

	ref := func(group *string, kind, ns, name string) *corev1.TypedObjectReference {
		r := &corev1.TypedObjectReference{APIGroup: group, Kind: kind, Name: name}
		if ns != "" {
			r.Namespace = ptr.To(ns)
		}
		return r
	}
	snapGroup := ptr.To(snapshotGroup)

	// Refused by kube-apiserver's validation of claims: the user sees the
	// error at create.
	for _, tc := range []struct {
		name   string
		ref    *corev1.TypedObjectReference
		size   string
		fields []string
	}{
		{name: "empty name in dataSourceRef", ref: ref(snapGroup, "VolumeSnapshot", prod, ""), fields: []string{"spec.dataSourceRef.name", "Required"}},
		{name: "empty kind in dataSourceRef", ref: ref(snapGroup, "", prod, "nightly"), fields: []string{"spec.dataSourceRef.kind", "Required"}},
		{name: "nil apiGroup for a VolumeSnapshot", ref: ref(nil, "VolumeSnapshot", prod, "nightly"),
			fields: []string{"spec.dataSourceRef", "must be 'PersistentVolumeClaim' when referencing the default apiGroup"}},
		{name: "namespace in capitals", ref: ref(snapGroup, "VolumeSnapshot", "Prod", "nightly"), fields: []string{"spec.dataSourceRef.namespace"}},
		{name: "namespace with a slash", ref: ref(snapGroup, "VolumeSnapshot", prod+"/x", "nightly"), fields: []string{"spec.dataSourceRef.namespace"}},
		{name: "zero size", size: "0", fields: []string{"spec.resources[storage]", "must be greater than zero"}},
		{name: "negative size", size: "-1Gi", fields: []string{"spec.resources[storage]"}},
	} {
		pvc := newClaim(dev, "rejected", "1Mi")
		pvc.Spec.DataSourceRef = tc.ref
		if tc.size != "" {
			pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(tc.size)
		}
		_, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Create(ctx, pvc, metav1.CreateOptions{})
		requireInvalid(t, "claim with "+tc.name, err, tc.fields...)
	}

	// Accepted by kube-apiserver; the sidecar tells the user.
	cases := []struct {
		name           string
		ref            *corev1.TypedObjectReference
		size           string
		eventType      string
		reason         string
		words          []string
		onceOnly       bool // a final refusal: not repeated
		nsMustNotExist bool // ref's namespace is made unique and never created
	}{
		{name: "snapshot kind in lower case", ref: ref(snapGroup, "volumesnapshot", prod, "nightly"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true,
			words: []string{`kind "volumesnapshot"`, "case-sensitive", "did you mean VolumeSnapshot", "create the claim again"}},
		{name: "snapshot kind in capitals, same namespace", ref: ref(snapGroup, "VOLUMESNAPSHOT", "", "nightly"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true, words: []string{`kind "VOLUMESNAPSHOT"`, "did you mean VolumeSnapshot"}},
		{name: "apiGroup core", ref: ref(ptr.To("core"), "PersistentVolumeClaim", prod, "db"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true, words: []string{`apiGroup "core"`, "leaving apiGroup out"}},
		{name: "snapshot name with a space", ref: ref(snapGroup, "VolumeSnapshot", prod, "night ly"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true, words: []string{`VolumeSnapshot "night ly"`, "not a valid object name"}},
		{name: "claim name in capitals", ref: ref(nil, "PersistentVolumeClaim", "", "Data"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true, words: []string{`PersistentVolumeClaim "Data"`, "not a valid object name"}},
		{name: "claim name with dots and slashes", ref: ref(nil, "PersistentVolumeClaim", prod, "../db"),
			eventType: corev1.EventTypeWarning, reason: "DataSourceInvalid", onceOnly: true, words: []string{`PersistentVolumeClaim "../db"`}},
		// Nothing about the namespace is revealed: a grant there is missing,
		// whether the namespace exists or not.
		{name: "namespace that does not exist", ref: ref(snapGroup, "VolumeSnapshot", "", "nightly"), nsMustNotExist: true,
			eventType: corev1.EventTypeWarning, reason: "ReferenceGrantMissing", words: []string{"no ReferenceGrant in namespace", "nightly"}},
		// A kind of another group may belong to a volume populator installed
		// now or later: upstream's Normal Event, not a Warning.
		{name: "unknown kind", ref: ref(ptr.To("backup.example.com"), "Backup", "", "monday"),
			eventType: corev1.EventTypeNormal, reason: "Provisioning", words: []string{"Backup.backup.example.com", "external volume populator"}},
		// Quantity.Value of these is 0, negative or clamped to the largest
		// int64: none may reach the driver as a size.
		{name: "size 1e30", size: "1e30", eventType: corev1.EventTypeWarning, reason: "ProvisioningFailed",
			words: []string{"1e30", "larger than any volume CSI can create"}},
		{name: "size 2^63 bytes", size: "9223372036854775808", eventType: corev1.EventTypeWarning, reason: "ProvisioningFailed",
			words: []string{"larger than any volume CSI can create"}},
		{name: "size 1000Ei", size: "1000Ei", eventType: corev1.EventTypeWarning, reason: "ProvisioningFailed",
			words: []string{"larger than any volume CSI can create"}},
	}
	pvcs := make([]*corev1.PersistentVolumeClaim, len(cases))
	for i, tc := range cases {
		pvc := newClaim(dev, fmt.Sprintf("case-%d", i), "1Mi")
		pvc.Spec.DataSourceRef = tc.ref
		if tc.nsMustNotExist {
			pvc.Spec.DataSourceRef.Namespace = ptr.To(bedName(dev, "nowhere"))
			tc.words = append(tc.words, bedName(dev, "nowhere"))
			cases[i] = tc
		}
		if tc.size != "" {
			pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(tc.size)
		}
		pvcs[i] = createClaim(t, c, pvc)
	}
	deadline := time.Now().Add(provisionWait)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pvc := pvcs[i]
			waitEventWith(t, c, dev, pvc.Name, tc.eventType, tc.reason, atLeast(deadline), tc.words...)
			requireNoCreateVolume(t, pvc)
			requirePending(t, c, dev, pvc.Name)
		})
	}
	// A final refusal is not a retry loop.
	time.Sleep(5 * time.Second)
	for i, tc := range cases {
		if tc.onceOnly {
			requireReportedOnce(t, c, dev, pvcs[i].Name, tc.reason)
		}
	}
	w.requireHealthy(t, c, dev)
}

// requireReportedOnce checks that an Event reason was sent at most twice
// (once per attempt the claim's creation and its annotation by the PV
// controller may cause), not on every retry.
func requireReportedOnce(t *testing.T, c *clients, ns, name, reason string) {
	t.Helper()
	evs, err := claimEvents(testContext(t), c, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	var count int32
	for _, e := range evs {
		if e.Reason == reason {
			count += max(e.Count, 1)
		}
	}
	if count > 2 {
		t.Errorf("%s was reported %d times on %s/%s; a final refusal is reported once per change of the claim", reason, count, ns, name)
	}
}

// StorageClasses whose secret templates cannot be expanded into a secret
// reference fail their claims with a Warning naming the template and what
// the field may use; no volume is created.
func TestBrokenSecretTemplatesRefused(t *testing.T) {
	c := requireBed(t)
	w := watchSidecar(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "badclass")
	const (
		name   = "csi.storage.k8s.io/provisioner-secret-name"
		nsKey  = "csi.storage.k8s.io/provisioner-secret-namespace"
		npName = "csi.storage.k8s.io/node-publish-secret-name"
		npNS   = "csi.storage.k8s.io/node-publish-secret-namespace"
	)
	cases := []struct {
		name   string
		params map[string]string
		words  []string
	}{
		{"unknown template", map[string]string{name: "${pvc.uid}", nsKey: "${pvc.namespace}"},
			[]string{"${pvc.uid}", "is not allowed here", "a secret name may use ${pv.name}, ${pvc.namespace}, ${pvc.name}"}},
		{"claim name in the namespace", map[string]string{name: "creds", nsKey: "${pvc.name}"},
			[]string{"${pvc.name}", "a secret namespace may use ${pv.name} and ${pvc.namespace}"}},
		{"unterminated template", map[string]string{name: "${pvc.name", nsKey: "${pvc.namespace}"},
			[]string{`"${pvc.name"`, "not a valid secret name"}},
		{"template in braces twice", map[string]string{npName: "${${pv.name}}", npNS: "secrets"},
			[]string{"${${pv.name}", "is not allowed here"}},
		{"annotation the claim does not have", map[string]string{npName: "${pvc.annotations['team/secret']}", npNS: "${pvc.namespace}"},
			[]string{`claim has no annotation "team/secret"`}},
		{"annotation template in the namespace", map[string]string{npName: "creds", npNS: "${pvc.annotations['team/secret']}"},
			[]string{"${pvc.annotations['team/secret']}", "a secret namespace may use"}},
		{"name without namespace", map[string]string{name: "creds"}, []string{nsKey, "needs both"}},
		{"empty name", map[string]string{name: "", nsKey: "secrets"}, []string{"must not be empty"}},
		{"result no secret name", map[string]string{name: "Creds_${pvc.name}", nsKey: "${pvc.namespace}"}, []string{"not a valid secret name"}},
	}
	pvcs := make([]*corev1.PersistentVolumeClaim, len(cases))
	for i, tc := range cases {
		className := bedName(ns, fmt.Sprintf("case-%d", i))
		_, err := c.kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
			ObjectMeta: metav1.ObjectMeta{Name: className}, Provisioner: driverName, Parameters: tc.params,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: creating StorageClass: %v", tc.name, err)
		}
		t.Cleanup(func() {
			_ = c.kube.StorageV1().StorageClasses().Delete(context.Background(), className, metav1.DeleteOptions{})
		})
		pvc := newClaim(ns, fmt.Sprintf("case-%d", i), "1Mi")
		pvc.Spec.StorageClassName = ptr.To(className)
		pvcs[i] = createClaim(t, c, pvc)
	}
	deadline := time.Now().Add(provisionWait)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			waitEventWith(t, c, ns, pvcs[i].Name, corev1.EventTypeWarning, "ProvisioningFailed", atLeast(deadline), tc.words...)
			requireNoCreateVolume(t, pvcs[i])
			requirePending(t, c, ns, pvcs[i].Name)
		})
	}
	w.requireHealthy(t, c, ns)
}
