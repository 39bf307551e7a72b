// An RFC 9728 client, as discovering clients (MCP clients, OAuth 2.1 SDKs) behave, built on
// oauth4webapi: a bare request to the resource, the 401's `resource_metadata`, the protected-resource
// metadata (resourceDiscoveryRequest / processResourceDiscoveryResponse), then the authorization
// server it names (discoveryRequest / processDiscoveryResponse). Prints what it found as JSON.
//
// Usage: node discover.mjs '<json>' with
//   resource     the resource identifier (https://api.mtls.test/discover)
//   path         a protected path under it (/discover/orders)
//   envoy_port   the Envoy listener the resource's host resolves to (both faces share the name)
//   ca, cert, key  the server CA (Envoy and the IdP) and the client certificate Envoy requires
//
// The resource's host is a name of the deployment, not of this machine: requests to it go to
// 127.0.0.1:envoy_port with that Host, as `curl --resolve` would send them. Every other URL (the
// authorization server) is fetched as named.

import fs from 'node:fs';
import https from 'node:https';
import * as oauth from 'oauth4webapi';

const args = JSON.parse(process.argv[2]);
const resource = new URL(args.resource);
const tls = {
  ca: fs.readFileSync(args.ca),
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
};
const fetched = [];

// oauth4webapi's customFetch: Node's own fetch cannot present a client certificate.
function send(url, options = {}) {
  const target = new URL(url);
  fetched.push(target.href);
  const toResource = target.host === resource.host;
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port: toResource ? args.envoy_port : target.port,
      servername: 'localhost',
      path: target.pathname + target.search,
      method: options.method || 'GET',
      headers: { ...(options.headers || {}), host: target.host },
      ...tls,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(res.headers)) {
          for (const v of [].concat(value)) headers.append(name, v);
        }
        resolve(new Response(res.statusCode === 204 ? null : Buffer.concat(chunks), { status: res.statusCode, headers }));
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

const options = { [oauth.customFetch]: send };
const resourceUrl = new URL(args.path, resource);

// 1. A bare request: no token. The 401's challenges name the metadata (RFC 9728 §5.1).
const bare = await send(resourceUrl.href);
const challenges = bare.headers.get('www-authenticate') ?? '';
const fromBare = /resource_metadata="([^"]*)"/.exec(challenges)?.[1] ?? null;

// 2. The same through oauth4webapi's own challenge parser: a request with a token it does not
//    know is refused, and the library surfaces the parsed challenges.
let parsed = null;
try {
  await oauth.protectedResourceRequest('not-a-token', 'GET', resourceUrl, new Headers(), null, options);
} catch (err) {
  if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err;
  parsed = err.cause.map((c) => ({ scheme: c.scheme, parameters: c.parameters }));
}

// 3. Protected-resource metadata: oauth4webapi builds the well-known URL from the identifier
//    (§3.1) and checks the document's `resource` against it (§3.3).
const before = fetched.length;
const metadata = await oauth.processResourceDiscoveryResponse(
  resource, await oauth.resourceDiscoveryRequest(resource, options));
const metadataUrl = fetched[before];

// 4. The authorization server it names: OpenID discovery, issuer checked.
const issuer = new URL(metadata.authorization_servers[0]);
const as = await oauth.processDiscoveryResponse(
  issuer, await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oidc' }));

console.log(JSON.stringify({
  bare: { status: bare.status, www_authenticate: challenges, resource_metadata: fromBare },
  parsed,
  metadata_url: metadataUrl,
  metadata,
  authorization_server: { issuer: as.issuer, token_endpoint: as.token_endpoint },
}));
