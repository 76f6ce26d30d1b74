// Package inflight is the durable record of CreateVolume calls that may still
// be running in the driver.
//
// The CSI spec (CreateVolume, "Idempotency") lets a driver finish a backend
// operation after its caller went away, and asks the CO to repeat the call to
// learn the result. A record kept only in memory is lost when the sidecar is
// killed, restarted or loses its lease, and the volume made by such a call is
// then owned by nobody (upstream external-provisioner issue #486). Here the
// record is written (batched: one API write for many claims) before the call,
// survives restarts in a ConfigMap in the sidecar's namespace, and is settled
// by repeating the idempotent call: the volume it names is either owned by a
// PV, or deleted.
package inflight

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Record is one CreateVolume call that may be running in the driver.
type Record struct {
	// ClaimUID, Namespace and Claim identify the claim the call is for.
	ClaimUID  types.UID
	Namespace string
	Claim     string
	// PVName is the PV the provision loop creates for it; once that PV
	// exists, the volume is owned and the record is done.
	PVName string
	// Source is the data source the call copies from, as a protection key
	// ("Kind/namespace/name"; "" for an empty volume). The source is held
	// while the record exists: a repeated call needs it.
	Source string
	// SecretRef names the provisioner secret; its data is read again when the
	// call is repeated and never stored here.
	SecretRef *v1.SecretReference
	// Request is the call without secrets.
	Request *csi.CreateVolumeRequest
	// Started is when the record was first written.
	Started time.Time
}

// wire is the JSON form of a Record in the ConfigMap (one key per claim UID).
type wire struct {
	Namespace       string          `json:"namespace"`
	Claim           string          `json:"claim"`
	PVName          string          `json:"pv"`
	Source          string          `json:"source,omitempty"`
	SecretName      string          `json:"secretName,omitempty"`
	SecretNamespace string          `json:"secretNamespace,omitempty"`
	Request         json.RawMessage `json:"request"`
	Started         time.Time       `json:"started"`
}

// withoutSecrets returns req with its secrets removed: records live in a
// ConfigMap that more people can read than the secret.
func withoutSecrets(req *csi.CreateVolumeRequest) *csi.CreateVolumeRequest {
	if len(req.GetSecrets()) == 0 {
		return req
	}
	c := proto.Clone(req).(*csi.CreateVolumeRequest)
	c.Secrets = nil
	return c
}

func encode(r *Record) (string, error) {
	req, err := protojson.Marshal(withoutSecrets(r.Request))
	if err != nil {
		return "", fmt.Errorf("encoding CreateVolume request %q: %w", r.Request.GetName(), err)
	}
	w := wire{Namespace: r.Namespace, Claim: r.Claim, PVName: r.PVName, Source: r.Source, Request: req, Started: r.Started}
	if r.SecretRef != nil {
		w.SecretName, w.SecretNamespace = r.SecretRef.Name, r.SecretRef.Namespace
	}
	b, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("encoding record of claim %s/%s: %w", r.Namespace, r.Claim, err)
	}
	return string(b), nil
}

func decode(uid, data string) (*Record, error) {
	var w wire
	if err := json.Unmarshal([]byte(data), &w); err != nil {
		return nil, fmt.Errorf("decoding record %s: %w", uid, err)
	}
	req := &csi.CreateVolumeRequest{}
	if err := protojson.Unmarshal(w.Request, req); err != nil {
		return nil, fmt.Errorf("decoding the CreateVolume request of record %s: %w", uid, err)
	}
	if req.Name == "" || w.Namespace == "" || w.Claim == "" {
		return nil, fmt.Errorf("record %s names no volume or claim", uid)
	}
	r := &Record{ClaimUID: types.UID(uid), Namespace: w.Namespace, Claim: w.Claim, PVName: w.PVName,
		Source: w.Source, Request: req, Started: w.Started}
	if w.SecretName != "" {
		r.SecretRef = &v1.SecretReference{Name: w.SecretName, Namespace: w.SecretNamespace}
	}
	return r, nil
}

// same reports whether two records describe the same call, so a retry of a
// call already recorded costs no write.
func same(a, b *Record) bool {
	return a.Namespace == b.Namespace && a.Claim == b.Claim && a.PVName == b.PVName && a.Source == b.Source &&
		secretRefEqual(a.SecretRef, b.SecretRef) && proto.Equal(withoutSecrets(a.Request), withoutSecrets(b.Request))
}

func secretRefEqual(a, b *v1.SecretReference) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
