#!/usr/bin/env node
// One local OpenID provider for the federated-login suite: panva's oidc-provider (OpenID
// Certified, pinned in package-lock.json) with users of its own and one client, Warden.
//
//   node idp.mjs PORT NAME REDIRECT_URI
//
// Env: IDP_CLIENT_SECRET  Warden's client secret (client_secret_basic).
// Users (the dev interactions' login field; any password): NAME decides which.
// Prints `ready ISSUER` on stdout once listening; stops on SIGTERM.
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

const [port, name, redirectUri] = process.argv.slice(2);
const secret = process.env.IDP_CLIENT_SECRET;
if (!port || !name || !redirectUri || !secret) {
  console.error('usage: IDP_CLIENT_SECRET=... idp.mjs PORT NAME REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Each IdP holds its own users. `groups` becomes Warden groups (claims mapping).
const USERS = {
  corp: {
    alice: { email: 'alice@corp.example', email_verified: true, name: 'Alice Corp', groups: ['employees'] },
    carol: { email: 'carol@corp.example', email_verified: true, name: 'Carol Compliance', groups: ['employees', 'compliance'] },
    mallory: { email: 'mallory@evil.example', email_verified: true, name: 'Mallory', groups: ['compliance'] },
  },
  partner: {
    bob: { email: 'bob@partner.example', email_verified: true, name: 'Bob Partner', groups: ['employees'] },
  },
}[name];
if (!USERS) {
  console.error(`unknown IdP name ${name}`);
  process.exit(2);
}

// Signing keys of this IdP alone (not the library's shared development keys).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `${name}-${randomUUID()}`, use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [
    {
      client_id: 'warden',
      client_secret: secret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Put the requested claims in the ID token itself (Warden reads no userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: [`warden-idp-test-${name}-${port}`] },
  async findAccount(_ctx, id) {
    const u = USERS[id];
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: `${name}|${id}`, preferred_username: id, ...u };
      },
    };
  },
});
provider.on('server_error', (_ctx, err) => console.error(`[idp ${name}] server_error: ${err.message}`));

const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
