// Verify a JWT with jose against a remote JWKS. Protocol: ONE JSON request on stdin -> ONE JSON
// answer line on stdout.
// Request: {"jwks_url":"http://…","token":"…","issuer":"…","audience":"…"}
// Answer:  {"ok":true,"payload":{…},"header":{…}} or {"ok":false,"error":"…"}
import { createRemoteJWKSet, jwtVerify } from 'jose';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
try {
  const jwks = createRemoteJWKSet(new URL(req.jwks_url));
  const { payload, protectedHeader } = await jwtVerify(req.token, jwks, {
    issuer: req.issuer,
    audience: req.audience,
    algorithms: ['EdDSA'],
  });
  process.stdout.write(JSON.stringify({ ok: true, payload, header: protectedHeader }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e.code ?? e.message) }) + '\n');
}
