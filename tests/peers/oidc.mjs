// Real OpenID provider (oidc-provider) on loopback for Rust integration tests.
//   GEN_KEYS_FILE=1 node oidc.mjs   -> prints {"keys":[<fresh RSA-2048 private JWK>]} and exits
//   PORT=0 KEYS_FILE=keys.json node oidc.mjs
//        -> prints exactly one line "READY http://127.0.0.1:<port>" once listening; SIGTERM exits 0.
// KEYS_FILE is a private JWKS; the FIRST key signs, every key is published in jwks_uri.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints NOTICEs via console.info (stdout); keep stdout for the READY line only.
console.log = console.info = console.warn;

if (process.env.GEN_KEYS_FILE) {
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };
  process.stdout.write(JSON.stringify({ keys: [jwk] }) + '\n');
  process.exit(0);
}

if (!process.env.KEYS_FILE) {
  console.error('KEYS_FILE is required (or GEN_KEYS_FILE=1 to generate one)');
  process.exit(2);
}
const jwks = JSON.parse(readFileSync(process.env.KEYS_FILE, 'utf8'));
const RESOURCE = 'urn:portcullis:test';

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks,
  ttl: { ClientCredentials: 600 },
  clients: [{
    client_id: 'svc',
    client_secret: 'svc-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: () => ({
        scope: 'comps:read',
        audience: RESOURCE,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: () => ({
    org_id: 'org_oidc',
    org_role: 'org:member',
    org_permissions: ['org:comps:read'],
  }),
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
server.on('request', provider.callback());

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
});
process.on('SIGINT', () => process.exit(0));
process.stdout.write(`READY ${issuer}\n`);
