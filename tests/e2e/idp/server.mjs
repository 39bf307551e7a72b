// Test OpenID provider for certbound's end-to-end suite (npm oidc-provider 9).
//
// It issues RFC 8705 certificate-bound JWT access tokens over real mutual TLS: Node's own HTTPS
// server asks for a client certificate (requestCert) and oidc-provider reads it from the TLS socket,
// so `cnf.x5t#S256` is computed by the IdP from the certificate the client actually presented.
//
// Configuration (environment):
//   IDP_PORT          HTTPS port on 127.0.0.1 (issuer = https://127.0.0.1:IDP_PORT)
//   IDP_ADMIN_PORT    plain-HTTP admin port on 127.0.0.1 (rotation + test-token minting, see below)
//   IDP_TLS_CERT/KEY  server certificate and key (PEM)
//   IDP_CLIENT_CA     PEM bundle of client CAs (root + intermediate) used to judge client certs
//   IDP_JWKS          private JWKS file; generated (RS256 + ES256) when absent, rewritten on rotation
//   IDP_KID_PREFIX    prefix of generated key ids (default "idp"), so two IdPs never share a kid
//   IDP_TOKEN_TTL     access token lifetime in seconds (default 600)
//
// Admin endpoints (127.0.0.1 only, test harness only):
//   GET  /healthz  -> {"ok":true,"kids":{...current signing kids...}}
//   POST /rotate   -> generates a NEW RS256 and ES256 key, publishes them in the JWKS (old keys
//                     stay published so tokens already issued still verify) and signs with them from
//                     now on. Same process, same port, same issuer: a relying party has to notice
//                     the unknown kid and re-fetch the JWKS. SIGHUP does the same.
//   POST /sign     -> body {"alg":"RS256"|"ES256", "payload":{...}, "header":{...}} returns
//                     {"token": "..."} signed with the current key for alg. Lets the suite build
//                     tokens the provider would never issue (expired, not-yet-valid, unbound, odd typ)
//                     that are nevertheless validly signed by the trusted issuer.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`missing environment variable ${name}`);
  return value;
};

const PORT = Number(env('IDP_PORT'));
const ADMIN_PORT = Number(env('IDP_ADMIN_PORT'));
const ISSUER = `https://127.0.0.1:${PORT}`;
const JWKS_FILE = env('IDP_JWKS');
const KID_PREFIX = env('IDP_KID_PREFIX', 'idp');
const TOKEN_TTL = Number(env('IDP_TOKEN_TTL', '600'));

// Resource servers (RFC 8707 resource indicators). Only these yield JWT access tokens; the audience
// equals the resource. certbound accepts api.test and api-es.test; other.test exists so the suite
// can get a correctly signed, correctly bound token with an audience certbound must refuse.
const RESOURCES = {
  'https://api.test': { alg: 'RS256', format: 'jwt' },
  'https://api-es.test': { alg: 'ES256', format: 'jwt' },
  'https://other.test': { alg: 'RS256', format: 'jwt' },
  'https://opaque.test': { format: 'opaque' }, // introspection-only tokens (RFC 7662)
};

// --- signing keys --------------------------------------------------------------------------------
// The JWKS holds private JWKs, newest first; the newest key of each alg signs. Kids are
// PREFIX-alg-N with N counting per alg (idp-rs256-1, after one rotation idp-rs256-2).
function newKey(alg, keys = []) {
  const generation = keys.filter((k) => k.alg === alg).length + 1;
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `${KID_PREFIX}-${alg.toLowerCase()}-${generation}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

function loadOrCreateJwks() {
  if (fs.existsSync(JWKS_FILE)) {
    return JSON.parse(fs.readFileSync(JWKS_FILE, 'utf8'));
  }
  const jwks = { keys: [newKey('RS256'), newKey('ES256')] };
  saveJwks(jwks);
  return jwks;
}

function saveJwks(jwks) {
  // Written atomically and 0600: it holds private keys.
  const tmp = `${JWKS_FILE}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(jwks, null, 2), { mode: 0o600 });
  fs.renameSync(tmp, JWKS_FILE);
}

let jwks = loadOrCreateJwks();
const currentKids = () => Object.fromEntries(
  ['RS256', 'ES256'].map((alg) => [alg, jwks.keys.find((k) => k.alg === alg).kid]),
);

// --- the provider ----------------------------------------------------------------------------------
const CLIENT_DEFAULTS = {
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
};

function configuration() {
  const kids = currentKids();
  return {
    jwks,
    clients: [
      // alice authenticates with her certificate itself (RFC 8705 §2.1 tls_client_auth) ...
      {
        ...CLIENT_DEFAULTS,
        client_id: 'alice-app',
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_san_dns: 'alice.clients.test',
        tls_client_certificate_bound_access_tokens: true,
      },
      // ... bob and carol with a secret; their tokens are still bound to the TLS client cert.
      {
        ...CLIENT_DEFAULTS,
        client_id: 'bob-app',
        client_secret: 'bob-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        tls_client_certificate_bound_access_tokens: true,
      },
      {
        ...CLIENT_DEFAULTS,
        client_id: 'carol-app',
        client_secret: 'carol-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        tls_client_certificate_bound_access_tokens: true,
      },
      // Mesh workloads: each asks over mTLS with its SVID, which the token is bound to (RFC 8705).
      ...[['checkout-app', 'checkout-secret'], ['cart-app', 'cart-secret'], ['report-app', 'report-secret']]
        .map(([client_id, client_secret]) => ({
          ...CLIENT_DEFAULTS,
          client_id,
          client_secret,
          token_endpoint_auth_method: 'client_secret_basic',
          tls_client_certificate_bound_access_tokens: true,
        })),
      // Gets unbound tokens (no cnf): certbound in strict mode must refuse them.
      {
        ...CLIENT_DEFAULTS,
        client_id: 'unbound-app',
        client_secret: 'unbound-secret',
        token_endpoint_auth_method: 'client_secret_basic',
      },
      // A DPoP client (RFC 9449): no certificate; its tokens are bound to its proof key (cnf.jkt).
      {
        ...CLIENT_DEFAULTS,
        client_id: 'dpop-app',
        client_secret: 'dpop-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        dpop_bound_access_tokens: true,
      },
      // certbound's resource server identity for RFC 7662 introspection.
      {
        ...CLIENT_DEFAULTS,
        client_id: 'certbound-rs',
        client_secret: 'certbound-rs-secret',
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // tls_client_auth must be listed explicitly: features.mTLS.tlsClientAuth only makes it allowed.
    clientAuthMethods: ['client_secret_basic', 'tls_client_auth'],
    ttl: { ClientCredentials: TOKEN_TTL },
    // oidc-provider 9 already sets sub = client_id for client-credentials JWTs; saying it here keeps
    // the `sub` claim (certbound's upstream_headers_claims test) independent of that default.
    extraTokenClaims: async (ctx, token) => (token.clientId ? { sub: token.clientId } : undefined),
    features: {
      devInteractions: { enabled: false }, // no end-user flows: client_credentials only
      clientCredentials: { enabled: true },
      // DPoP-bound access tokens (cnf.jkt) for clients that send a proof to the token endpoint.
      dPoP: { enabled: true },
      introspection: {
        enabled: true,
        // Only the resource server identity (or a client asking about its own token) may introspect.
        allowedPolicy: (ctx, client, token) => client.clientId === 'certbound-rs' || token.clientId === client.clientId,
      },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        // The certificate the client presented in *this* TLS handshake.
        getCertificate: (ctx) => ctx.socket.getPeerX509Certificate?.(),
        // requestCert + rejectUnauthorized:false lets any cert through the handshake; Node still
        // checks it against IDP_CLIENT_CA and records the verdict in socket.authorized.
        certificateAuthorized: (ctx) => ctx.socket.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => {
          const cert = ctx.socket.getPeerX509Certificate?.();
          if (!cert) return false;
          if (property === 'tls_client_auth_san_dns') {
            return (cert.subjectAltName ?? '').split(', ').includes(`DNS:${expected}`);
          }
          return false; // other tls_client_auth_* properties are not used by the suite
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://api.test',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const rs = RESOURCES[resource];
          if (!rs) throw new errors.InvalidTarget();
          if (rs.format === 'opaque') {
            return { audience: resource, scope: 'read', accessTokenFormat: 'opaque' };
          }
          return {
            audience: resource,
            scope: 'read',
            accessTokenFormat: 'jwt',
            // Explicit kid: after /rotate the newest key signs, deterministically.
            jwt: { sign: { alg: rs.alg, kid: kids[rs.alg] } },
          };
        },
      },
    },
  };
}

function buildProvider() {
  const provider = new Provider(ISSUER, configuration());
  // Failures only, never tokens.
  provider.on('server_error', (ctx, err) => console.error('idp server_error:', err));
  provider.on('grant.error', (ctx, err) => console.error('idp grant.error:', err.message, err.error_description ?? ''));
  return provider;
}

// Rotation swaps the whole Provider object: its keystore is built once from `jwks` and is not
// public API. The in-memory adapter's storage is module-level, so opaque tokens issued before a
// rotation remain introspectable.
let provider = buildProvider();

function rotate() {
  jwks = { keys: [newKey('RS256', jwks.keys), newKey('ES256', jwks.keys), ...jwks.keys] };
  saveJwks(jwks);
  provider = buildProvider();
  console.log(`idp rotated signing keys: ${JSON.stringify(currentKids())}`);
  return currentKids();
}

// --- test-token minting (admin) -------------------------------------------------------------------
const b64u = (buf) => Buffer.from(buf).toString('base64url');

function mint({ alg = 'RS256', header = {}, payload = {} }) {
  const jwk = jwks.keys.find((k) => k.alg === alg);
  if (!jwk) throw new Error(`no key for ${alg}`);
  const head = { alg, typ: 'at+jwt', kid: jwk.kid, ...header };
  const input = `${b64u(JSON.stringify(head))}.${b64u(JSON.stringify(payload))}`;
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  // JWS ES256 signatures are raw r||s (ieee-p1363), not DER.
  const sig = crypto.sign('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${b64u(sig)}`;
}

// --- servers -----------------------------------------------------------------------------------
const server = https.createServer({
  cert: fs.readFileSync(env('IDP_TLS_CERT')),
  key: fs.readFileSync(env('IDP_TLS_KEY')),
  ca: fs.readFileSync(env('IDP_CLIENT_CA')),
  requestCert: true,
  rejectUnauthorized: false, // discovery/JWKS/introspection callers present no certificate
}, (req, res) => provider.callback()(req, res));

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { data += chunk; if (data.length > 1 << 20) req.destroy(); });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

const admin = http.createServer(async (req, res) => {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.method === 'GET' && req.url === '/healthz') return reply(200, { ok: true, kids: currentKids() });
    if (req.method === 'POST' && req.url === '/rotate') return reply(200, { kids: rotate() });
    if (req.method === 'POST' && req.url === '/sign') {
      return reply(200, { token: mint(JSON.parse((await readBody(req)) || '{}')) });
    }
    return reply(404, { error: 'not found' });
  } catch (err) {
    return reply(500, { error: String(err.message ?? err) });
  }
});

process.on('SIGHUP', () => rotate());
const shutdown = () => { server.close(); admin.close(); process.exit(0); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(PORT, '127.0.0.1', () => {
  admin.listen(ADMIN_PORT, '127.0.0.1', () => {
    console.log(`idp ready issuer=${ISSUER} admin=http://127.0.0.1:${ADMIN_PORT} kids=${JSON.stringify(currentKids())}`);
  });
});
