#!/usr/bin/env node
// Serves Client ID Metadata Documents over https with the dev certificate (certs/localhost.pem,
// signed by certs/dev-ca.pem) for the federated-login suite.
//
//   node cimd-server.mjs PORT CERT KEY REDIRECT_URI CONFORMANCE_REDIRECT_URI
//
// GET /ts-client.json, /py-client.json: documents whose client_id is their own URL;
// GET /conformance.json: the same for the conformance suite's callback;
// GET /liar.json: a document claiming another client_id (Warden must refuse it).
// Prints `ready ORIGIN` once listening; stops on SIGTERM.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const [port, cert, key, redirectUri, conformanceRedirect] = process.argv.slice(2);
const origin = `https://localhost:${port}`;
const doc = (path, name, redirect = redirectUri) => ({
  client_id: `${origin}${path}`,
  client_name: name,
  redirect_uris: [redirect],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
  application_type: 'native',
});
const docs = {
  '/ts-client.json': doc('/ts-client.json', 'Warden idp suite (TypeScript SDK)'),
  '/py-client.json': doc('/py-client.json', 'Warden idp suite (Python SDK)'),
  '/conformance.json': doc('/conformance.json', 'MCP conformance suite', conformanceRedirect),
  '/liar.json': { ...doc('/liar.json', 'liar'), client_id: 'https://elsewhere.example/client.json' },
};
let fetches = 0;
const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  const d = docs[req.url];
  if (req.url === '/fetches') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(String(fetches));
    return;
  }
  if (!d) {
    res.writeHead(404).end();
    return;
  }
  fetches += 1;
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' }).end(JSON.stringify(d));
});
server.listen(Number(port), '127.0.0.1', () => console.log(`ready ${origin}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
