#!/usr/bin/env bash
# Per-run test PKI for certbound's end-to-end suite: bash tests/e2e/pki.sh OUTDIR [OCSP_URL]
#
# Client side (what certbound, nginx, Envoy and the IdP trust for client certificates):
#   client-root-ca.pem        EC P-256 root ("certbound e2e client root CA")
#   client-int-ca.pem         EC P-256 intermediate under that root (pathlen 0); signs the leaves
#   client-rsa-ca.pem         a second trusted root, RSA 2048, so an RSA chain is exercised too
#   client-ca-bundle.pem      the three above, for nginx / Envoy / the IdP (`ca` / trusted_ca)
#   alice, bob                EC P-256 leaves from the intermediate, EKU clientAuth
#   carol                     RSA 2048 leaf from client-rsa-ca
#   expired                   EC leaf from the intermediate, validity entirely in the past
#   untrusted                 EC leaf from untrusted-ca.pem, a CA nobody is configured to trust
#   dave, eve                 EC leaves from the intermediate whose Authority Information Access
#                             names OCSP_URL (default http://127.0.0.1:9/); eve is revoked
#   For each leaf NAME: NAME.pem (leaf), NAME-key.pem, NAME-chain.pem (leaf + issuing CA if it is
#   an intermediate), NAME.x5t (its RFC 8705 x5t#S256 thumbprint, for assertions).
# Revocation (answered by `openssl ocsp -index ocsp-db/index.txt ...`, which stack.py starts):
#   ocsp-db/index.txt         `openssl ca` database of the intermediate: dave valid, eve revoked
#   ocsp-responder.pem / ocsp-responder-key.pem   delegated responder from the intermediate
#                             (EKU OCSPSigning), the responder's -rsigner/-rkey
# Envoy as a gRPC client of certbound (the "peer" certbound's [grpc_tls] client_ca_file):
#   grpc-client-ca.pem        EC root that vouches only for Envoy
#   envoy-grpc                EC leaf from it, EKU clientAuth: Envoy's certbound_peer cluster
# A service mesh (Envoy's "mesh" listener stands in for an Istio inbound sidecar):
#   mesh-ca.pem               EC root, the mesh CA (Istio's istiod CA): the sidecar trusts only it
#   mesh-api                  the local workload's SVID, URI SAN spiffe://cluster.local/ns/api/sa/api
#                             (plus IP:127.0.0.1, EKU serverAuth+clientAuth): the sidecar's own
#                             certificate, which Envoy names in XFCC's `By`
#   mesh-a, mesh-b, mesh-c    workload SVIDs, EKU clientAuth, one URI SAN each:
#                             spiffe://cluster.local/ns/shop/sa/checkout, .../ns/shop/sa/cart,
#                             .../ns/batch/sa/report; each with NAME-chain.pem and NAME.x5t
# Server side (HTTPS of nginx, Envoy's mTLS listener, the IdP and certbound's gRPC TLS):
#   server-ca.pem             EC root; certbound's idp_ca_certificates and the clients' trust root
#   server.pem / server-key.pem   SAN IP:127.0.0.1, DNS:localhost, EKU serverAuth
#
# Everything is regenerated per run (no private key is ever committed). Idempotence is not needed:
# the suite always points this at a fresh directory.
set -euo pipefail

OUT="${1:?usage: pki.sh OUTDIR [OCSP_URL]}"
OCSP_URL="${2:-http://127.0.0.1:9/}"
mkdir -p "$OUT"
cd "$OUT"
umask 077   # private keys stay private even in a temp dir

ORG="certbound e2e"

# key NAME ec|rsa -> NAME-key.pem (PKCS#8)
key() {
  case "$2" in
    ec) openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1-key.pem" ;;
    rsa) openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1-key.pem" ;;
  esac
}

# root NAME KEYTYPE CN -> self-signed CA NAME.pem
root() {
  key "$1" "$2"
  openssl req -x509 -new -key "$1-key.pem" -out "$1.pem" -days 30 -subj "/O=$ORG/CN=$3" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
}

# sign NAME ISSUER EXTFILE [extra openssl x509 args] -> NAME.pem from NAME.csr
sign() {
  local name="$1" issuer="$2" ext="$3"; shift 3
  openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer-key.pem" \
    -CAcreateserial -out "$name.pem" -extfile "$ext" "$@" 2>/dev/null
  rm -f "$name.csr"
}

# x5t#S256 = base64url(SHA-256(DER)) without padding (RFC 8705 §3.1)
thumb() {
  openssl x509 -in "$1.pem" -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n'
}

cat > int-ca.ext <<'EOF'
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF

# client NAME ISSUER KEYTYPE [extra openssl x509 args]
client() {
  local name="$1" issuer="$2" kt="$3"; shift 3
  key "$name" "$kt"
  openssl req -new -key "$name-key.pem" -out "$name.csr" -subj "/O=$ORG/CN=$name" 2>/dev/null
  cat > "$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$name.clients.test
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  sign "$name" "$issuer" "$name.ext" "$@"
  rm -f "$name.ext"
  if [[ "$issuer" == client-int-ca ]]; then
    cat "$name.pem" client-int-ca.pem > "$name-chain.pem"
  else
    cp "$name.pem" "$name-chain.pem"
  fi
  thumb "$name" > "$name.x5t"
}

# --- client CAs ---
root client-root-ca ec "certbound e2e client root CA"
key client-int-ca ec
openssl req -new -key client-int-ca-key.pem -out client-int-ca.csr \
  -subj "/O=$ORG/CN=certbound e2e client intermediate CA" 2>/dev/null
sign client-int-ca client-root-ca int-ca.ext -days 30
root client-rsa-ca rsa "certbound e2e client RSA root CA"
root untrusted-ca ec "certbound e2e UNTRUSTED CA"
cat client-root-ca.pem client-int-ca.pem client-rsa-ca.pem > client-ca-bundle.pem

# --- client leaves ---
client alice client-int-ca ec -days 7
client bob client-int-ca ec -days 7
client carol client-rsa-ca rsa -days 7
client untrusted untrusted-ca ec -days 7

# expired: `openssl x509 -req` (OpenSSL 3.0) cannot back-date, `openssl ca` can (-startdate/-enddate).
key expired ec
openssl req -new -key expired-key.pem -out expired.csr -subj "/O=$ORG/CN=expired" 2>/dev/null
mkdir -p ca-db && : > ca-db/index.txt && echo 1000 > ca-db/serial
cat > ca-db/ca.cnf <<EOF
[ca]
default_ca = int
[int]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
certificate = client-int-ca.pem
private_key = client-int-ca-key.pem
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = leaf
[any]
organizationName = optional
commonName = supplied
[leaf]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:expired.clients.test
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
openssl ca -batch -config ca-db/ca.cnf -notext -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200201000000Z 2>/dev/null
rm -rf ca-db expired.csr
cat expired.pem client-int-ca.pem > expired-chain.pem
thumb expired > expired.x5t

# --- revocation: dave (good) and eve (revoked) name an OCSP responder for the intermediate ---
# `openssl ca` keeps the index `openssl ocsp` answers from; `-revoke` marks eve in it.
mkdir -p ocsp-db && : > ocsp-db/index.txt && echo 2000 > ocsp-db/serial
cat > ocsp-db/ca.cnf <<EOF
[ca]
default_ca = int
[int]
database = ocsp-db/index.txt
serial = ocsp-db/serial
new_certs_dir = ocsp-db
certificate = client-int-ca.pem
private_key = client-int-ca-key.pem
default_md = sha256
default_days = 7
policy = any
copy_extensions = none
unique_subject = no
x509_extensions = leaf
[any]
organizationName = optional
commonName = supplied
[leaf]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
authorityInfoAccess=OCSP;URI:$OCSP_URL
[responder]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=critical,OCSPSigning
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
# ca_issue NAME CN [openssl ca args]: an EC leaf from the intermediate, recorded in ocsp-db
ca_issue() {
  local name="$1" cn="$2"; shift 2
  key "$name" ec
  openssl req -new -key "$name-key.pem" -out "$name.csr" -subj "/O=$ORG/CN=$cn" 2>/dev/null
  openssl ca -batch -config ocsp-db/ca.cnf -notext -in "$name.csr" -out "$name.pem" "$@" 2>/dev/null
  rm -f "$name.csr"
}
for name in dave eve; do
  ca_issue "$name" "$name"
  cat "$name.pem" client-int-ca.pem > "$name-chain.pem"
  thumb "$name" > "$name.x5t"
done
ca_issue ocsp-responder "certbound e2e OCSP responder" -extensions responder
openssl ca -config ocsp-db/ca.cnf -revoke eve.pem -crl_reason keyCompromise 2>/dev/null

# --- Envoy's client certificate towards certbound's gRPC TLS listener ---
root grpc-client-ca ec "certbound e2e gRPC client CA"
client envoy-grpc grpc-client-ca ec

# --- the mesh: a CA and SVIDs with spiffe:// URI SANs, as Istio's CA issues them ---
root mesh-ca ec "certbound e2e mesh CA"
# svid NAME SPIFFE_ID EKU [extra SANs]
svid() {
  local name="$1" id="$2" eku="$3" extra="${4:-}"
  key "$name" ec
  openssl req -new -key "$name-key.pem" -out "$name.csr" -subj "/O=$ORG" 2>/dev/null
  cat > "$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectAltName=critical,URI:$id$extra
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  sign "$name" mesh-ca "$name.ext" -days 7
  rm -f "$name.ext"
  cp "$name.pem" "$name-chain.pem"
  thumb "$name" > "$name.x5t"
}
svid mesh-api spiffe://cluster.local/ns/api/sa/api serverAuth,clientAuth ",IP:127.0.0.1,DNS:localhost"
svid mesh-a spiffe://cluster.local/ns/shop/sa/checkout clientAuth
svid mesh-b spiffe://cluster.local/ns/shop/sa/cart clientAuth
svid mesh-c spiffe://cluster.local/ns/batch/sa/report clientAuth

# --- server side ---
root server-ca ec "certbound e2e server CA"
key server ec
openssl req -new -key server-key.pem -out server.csr -subj "/O=$ORG/CN=localhost" 2>/dev/null
cat > server.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
sign server server-ca server.ext -days 7
rm -f server.ext int-ca.ext ./*.srl

# Certificates are public; only *-key.pem stay 0600. Readable certs let nginx workers (if they
# ever drop privileges) and Envoy read them.
chmod 644 ./*.pem ./*.x5t
chmod 600 ./*-key.pem

# Self-check: the chains we hand out verify (or, for the negative ones, do not).
openssl verify -CAfile client-root-ca.pem -untrusted client-int-ca.pem alice.pem bob.pem dave.pem eve.pem >/dev/null
if ! grep -q "^R.*CN=eve" ocsp-db/index.txt || ! grep -q "^V.*CN=dave" ocsp-db/index.txt; then
  echo "pki.sh: ocsp-db/index.txt does not say dave valid, eve revoked" >&2; exit 1
fi
openssl verify -CAfile client-rsa-ca.pem carol.pem >/dev/null
openssl verify -CAfile server-ca.pem server.pem >/dev/null
openssl verify -CAfile grpc-client-ca.pem envoy-grpc.pem >/dev/null
openssl verify -CAfile mesh-ca.pem mesh-api.pem mesh-a.pem mesh-b.pem mesh-c.pem >/dev/null
if openssl verify -CAfile client-ca-bundle.pem untrusted.pem >/dev/null 2>&1; then
  echo "pki.sh: untrusted.pem unexpectedly verifies" >&2; exit 1
fi
if openssl verify -CAfile client-root-ca.pem -untrusted client-int-ca.pem expired.pem >/dev/null 2>&1; then
  echo "pki.sh: expired.pem unexpectedly verifies" >&2; exit 1
fi
echo "pki.sh: wrote $(ls | wc -l) files to $OUT"
