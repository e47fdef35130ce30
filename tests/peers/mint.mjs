// Mint JWTs with jose. Protocol: ONE JSON request on stdin -> ONE JSON answer line on stdout.
// Request: {"alg":"RS256","claims":{...},"header":{...},"kid":"k1","count":N}
// Answer:  {"jwks":{"keys":[publicJwk]},"token":"<compact>","tokens":[...]}
import { generateKeyPair, exportJWK, SignJWT } from 'jose';
import { randomUUID } from 'node:crypto';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const alg = req.alg ?? 'RS256';
const kid = req.kid ?? randomUUID();
const opts = { extractable: true };
if (alg === 'EdDSA') opts.crv = 'Ed25519';
if (/^(RS|PS)/.test(alg)) opts.modulusLength = 2048;
const { publicKey, privateKey } = await generateKeyPair(alg, opts);
const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };

const sign = (claims) =>
  new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'JWT', ...(req.header ?? {}) }).sign(privateKey);

const claims = req.claims ?? {};
const token = await sign(claims);
const tokens = [];
for (let i = 0; i < (req.count ?? 0); i++) tokens.push(await sign({ ...claims, jti: String(i) }));
process.stdout.write(JSON.stringify({ jwks: { keys: [jwk] }, token, tokens }) + '\n');
