#!/usr/bin/env bash
# The KEP-3294 story on the local bed: prod owns a snapshot, dev wants a copy;
# then live sharing: datasets owns a dataset, dev mounts that very volume.
# Run through `make demo` (which brings the bed up first).
set -euo pipefail
cd "$(dirname "$0")/../.."

export KUBECONFIG=$PWD/_output/cluster/kubeconfig
k=_output/bin/kubectl
data=_output/cluster/csi-data
calls=_output/cluster/logs/csi-test-driver-calls.log

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
wait_for() { # wait_for <seconds> <description> <command...>
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "timed out waiting for $what" >&2; return 1
}
phase() { $k get pvc -n "$1" "$2" -o jsonpath='{.status.phase}'; }
bound() { [ "$(phase "$1" "$2")" = Bound ]; }
ready() { [ "$($k get volumesnapshot -n "$1" "$2" -o jsonpath='{.status.readyToUse}')" = true ]; }
voldir() { echo "$data/volumes/$($k get pv "$($k get pvc -n "$1" "$2" -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.csi.volumeHandle}')"; }

say "Fresh namespaces prod and dev"
$k delete namespace dev --ignore-not-found --wait=true >/dev/null
$k delete namespace prod datasets --ignore-not-found --wait=true >/dev/null
run $k create namespace prod
run $k create namespace dev

say "prod: a database volume with data in it"
$k apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: db, namespace: prod}
spec:
  storageClassName: csi-test-sc
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
YAML
wait_for 60 "prod/db to bind" bound prod db
src=$(voldir prod db)
# There is no kubelet on the bed: write the files where the driver keeps them.
mkdir -p "$src" && printf 'id,customer,total\n1,alice,42\n2,bob,17\n' > "$src/orders.csv"
echo "prod/db is Bound; wrote orders.csv into its volume ($src)"

say "prod: a nightly VolumeSnapshot of it"
$k apply -f - <<YAML
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: nightly, namespace: prod}
spec:
  volumeSnapshotClassName: csi-test-snapclass
  source: {persistentVolumeClaimName: db}
YAML
wait_for 60 "prod/nightly to be ready" ready prod nightly
run $k get volumesnapshot -n prod nightly

say "dev: a claim restoring prod/nightly (no grant yet)"
run $k apply -f deploy/kubernetes/examples/cross-namespace/dev-claim.yaml
sleep 3
run $k get pvc -n dev copy-of-prod
echo "Events on dev/copy-of-prod:"
$k get events -n dev --field-selector involvedObject.name=copy-of-prod -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
uid=$($k get pvc -n dev copy-of-prod -o jsonpath='{.metadata.uid}')
n=$(grep -c "\"name\":\"pvc-$uid\"" "$calls" || true)
echo "CreateVolume calls the driver received for this claim: $n"

say "prod's owner grants dev access to the snapshot"
run $k apply -f deploy/kubernetes/examples/cross-namespace/prod-grant.yaml
start=$(date +%s.%N)
wait_for 60 "dev/copy-of-prod to bind" bound dev copy-of-prod
awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "dev/copy-of-prod Bound %.2f s after the grant\n", e - s }'
run $k get pvc -n dev copy-of-prod

say "What both owners see"
echo "Events on dev/copy-of-prod:"
$k get events -n dev --field-selector involvedObject.name=copy-of-prod -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
echo "Events on prod/nightly:"
$k get events -n prod --field-selector involvedObject.name=nightly,reason=UsedAsDataSource -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
pv=$($k get pvc -n dev copy-of-prod -o jsonpath='{.spec.volumeName}')
echo "Provenance on PV $pv:"
$k get pv "$pv" -o go-template='{{range $k, $v := .metadata.annotations}}{{if or (eq $k "provisioner.crossns.io/source-namespace") (eq $k "provisioner.crossns.io/source-kind") (eq $k "provisioner.crossns.io/source-name") (eq $k "provisioner.crossns.io/reference-grant")}}  {{$k}}={{$v}}{{"\n"}}{{end}}{{end}}'

say "The data, read from dev's volume"
dst=$(voldir dev copy-of-prod)
run cat "$dst/orders.csv"

say "Sharing, not copying: datasets owns a dataset that dev mounts live"
run $k create namespace datasets
run $k apply -f deploy/kubernetes/examples/sharing/datasets-claim.yaml
wait_for 60 "datasets/ml-data to bind" bound datasets ml-data
ds=$(voldir datasets ml-data)
mkdir -p "$ds" && printf 'image,label\ncat.png,cat\n' > "$ds/labels.csv"
echo "datasets/ml-data is Bound (ReadWriteMany, annotated sharing: ReadOnlyMany); wrote labels.csv"
run $k apply -f deploy/kubernetes/examples/sharing/datasets-grant.yaml
run $k apply -f deploy/kubernetes/examples/sharing/dev-share.yaml
wait_for 60 "dev/ml-data to bind" bound dev ml-data
run $k get pvc -n dev ml-data
share=$($k get pvc -n dev ml-data -o jsonpath='{.spec.volumeName}')
own=$($k get pvc -n datasets ml-data -o jsonpath='{.spec.volumeName}')
printf 'PV %-45s handle %s\n' "$own (datasets)" "$($k get pv "$own" -o jsonpath='{.spec.csi.volumeHandle}')"
printf 'PV %-45s handle %s readOnly=%s shared-from=%s\n' "$share (dev)" "$($k get pv "$share" -o jsonpath='{.spec.csi.volumeHandle}')" \
  "$($k get pv "$share" -o jsonpath='{.spec.csi.readOnly}')" "$($k get pv "$share" -o jsonpath='{.metadata.annotations.provisioner\.crossns\.io/shared-from}')"
uid=$($k get pvc -n dev ml-data -o jsonpath='{.metadata.uid}')
echo "CreateVolume calls for dev/ml-data: $(grep -c "\"name\":\"pvc-$uid\"" "$calls" || true) (a share is no copy)"
echo "Events on both claims:"
$k get events -n dev --field-selector involvedObject.name=ml-data,reason=VolumeShared -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
$k get events -n datasets --field-selector involvedObject.name=ml-data,reason=VolumeShared -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
printf 'dog.png,dog\n' >> "$ds/labels.csv"
echo "datasets appended a line; dev reads its own claim's volume:"
run cat "$(voldir dev ml-data)/labels.csv"
