#!/usr/bin/env bash
# Prints a DPoP proof (RFC 9449 section 4.2) for one request, signed with the DPoP key that
# examples/pki.sh wrote, for the token it minted (the proof's ath is that token's hash):
#
#   examples/dpop-proof.sh METHOD URL [DIR]
#   curl -H "Authorization: DPoP $(cat examples/pki/dpop.token)" \
#        -H "DPoP: $(examples/dpop-proof.sh GET https://api.example/orders)" ...
#
# A proof is good for one request: certbound remembers its jti and refuses it a second time.
set -euo pipefail

METHOD="$1"
URL="$2"
DIR="${3:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pki}"
KEY="$DIR/dpop-key.pem"

b64u() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
hex=$(openssl rsa -in "$KEY" -noout -modulus 2>/dev/null | cut -d= -f2)
n=$(printf '%b' "$(sed 's/../\\x&/g' <<<"$hex")" | b64u)   # hex to bytes without xxd
ath=$(printf '%s' "$(cat "$DIR/dpop.token")" | openssl dgst -sha256 -binary | b64u)
header=$(printf '{"typ":"dpop+jwt","alg":"RS256","jwk":{"kty":"RSA","n":"%s","e":"AQAB"}}' "$n" | b64u)
payload=$(printf '{"jti":"%s","htm":"%s","htu":"%s","iat":%d,"ath":"%s"}' \
  "$(openssl rand -hex 16)" "$METHOD" "$URL" "$(date +%s)" "$ath" | b64u)
printf '%s.%s.%s\n' "$header" "$payload" \
  "$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$KEY" -binary | b64u)"
