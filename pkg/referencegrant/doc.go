// Package referencegrant decides whether an object in one namespace may refer
// to an object in another namespace, following the ReferenceGrant API of
// gateway.networking.k8s.io (KEP-3294 uses it for cross-namespace volume data
// sources).
//
// The decision has to be cheap because the provisioner asks for every attempt
// and again just before CreateVolume, so grants are kept in an in-memory
// Index that answers with one map lookup. A Watcher discovers which version of
// the API is served, feeds the Index from an informer, and keeps the rest of
// the sidecar running while the API is missing or forbidden: callers get
// ErrUnavailable with a reason they can show to users, and listeners are told
// when decisions may have changed so that waiting claims are retried at once.
package referencegrant
