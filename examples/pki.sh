#!/usr/bin/env bash
# Throw-away material for trying the examples offline, with openssl alone: what an IdP and a CA
# would give you. Writes into DIR (default: examples/pki next to this script):
#
#   client-ca.pem              the CA that issues client certificates (nginx / Envoy trust it)
#   alice.pem, alice-key.pem   a client certificate and its key (curl --cert/--key)
#   bob.pem, bob-key.pem       another client: alice's token sent with bob's certificate is denied
#   server-ca.pem, server.pem, server-key.pem
#                              the TLS server certificate for localhost / 127.0.0.1 (curl --cacert)
#   signing-key.pem, jwks.json the "IdP's" RS256 key and its public JWKS (certbound's jwks_file)
#   alice.token                an RS256 access token for alice-app bound to alice.pem
#                              (cnf.x5t#S256, RFC 8705)
#   dpop-key.pem, dpop.token   a DPoP client key and a token bound to it (cnf.jkt, RFC 9449);
#                              examples/dpop-proof.sh signs the per-request proofs
#
# Keys and certificates are made once and kept; tokens are minted again on every run (they are
# valid for an hour). Nothing here is a secret worth keeping: never use it beyond a laptop.
#
#   examples/pki.sh [DIR]
set -euo pipefail

DIR="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pki}"
ISSUER="https://idp.example"
AUDIENCE="https://api.example"
KID="example-rs256"
mkdir -p "$DIR"
cd "$DIR"

b64u() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# RSA modulus of a key, base64url (a JWK's "n").
modulus() {
  local hex
  hex=$(openssl rsa -in "$1" -noout -modulus 2>/dev/null | cut -d= -f2)
  printf '%b' "$(sed 's/../\\x&/g' <<<"$hex")" | b64u   # hex to bytes without xxd
}

ca() { # name subject
  [[ -f "$1.pem" ]] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

leaf() { # name subject issuer extensions
  [[ -f "$1.pem" ]] && return
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3-key.pem" -CAcreateserial -days 30 \
    -extfile <(printf '%s\n' "$4") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}

ca client-ca "certbound examples client CA"
leaf alice alice-app client-ca "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
leaf bob bob-app client-ca "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
ca server-ca "certbound examples server CA"
leaf server localhost server-ca "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

for k in signing-key dpop-key; do
  [[ -f "$k.pem" ]] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$k.pem" 2>/dev/null
done
printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"%s","n":"%s","e":"AQAB"}]}\n' \
  "$KID" "$(modulus signing-key.pem)" > jwks.json

# An access token (RFC 9068 header) signed with the IdP's key; $1 is the cnf object.
mint() { # sub cnf-json
  local now header payload
  now=$(date +%s)
  header=$(printf '{"typ":"at+jwt","alg":"RS256","kid":"%s"}' "$KID" | b64u)
  payload=$(printf '{"iss":"%s","aud":"%s","sub":"%s","client_id":"%s","scope":"orders:read payments:write","iat":%d,"exp":%d,"jti":"%s","cnf":%s}' \
    "$ISSUER" "$AUDIENCE" "$1" "$1" "$now" "$((now + 3600))" "$(openssl rand -hex 8)" "$2" | b64u)
  printf '%s.%s.%s' "$header" "$payload" \
    "$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign signing-key.pem -binary | b64u)"
}

# RFC 8705 section 3.1: base64url(SHA-256(DER of the client certificate)).
x5t=$(openssl x509 -in alice.pem -outform DER | openssl dgst -sha256 -binary | b64u)
mint alice-app "{\"x5t#S256\":\"$x5t\"}" > alice.token
# RFC 7638 thumbprint of the DPoP public key: its required members, sorted, no spaces.
jkt=$(printf '{"e":"AQAB","kty":"RSA","n":"%s"}' "$(modulus dpop-key.pem)" | openssl dgst -sha256 -binary | b64u)
mint dpop-app "{\"jkt\":\"$jkt\"}" > dpop.token

echo "wrote $DIR: client-ca.pem alice.pem bob.pem server.pem jwks.json alice.token dpop.token (tokens valid 1 h)"
