// Sign webhook payloads with Svix's own library, as Clerk's sender does. Protocol: ONE JSON
// request on stdin -> ONE JSON answer line on stdout.
// Request: {"secret":"whsec_…","messages":[{"id":"msg_…","timestamp":<unix seconds>,"payload":"<raw JSON>"}]}
// Answer:  {"signatures":["v1,…", …]}
import { Webhook } from 'svix';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const wh = new Webhook(req.secret);
const signatures = req.messages.map((m) => wh.sign(m.id, new Date(m.timestamp * 1000), m.payload));
process.stdout.write(JSON.stringify({ signatures }) + '\n');
