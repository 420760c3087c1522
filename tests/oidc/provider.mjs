// A local OpenID Connect provider for the identity tests: panva's oidc-provider (OpenID
// Certified), configured like a small realm. Started by tests/oidc_provider.py with one
// argument, a JSON file:
//   {"port", "issuer", "audience", "tls": {"cert", "key"} (PEM paths),
//    "keys": [private JWKs; the first signs, the others are still published],
//    "access_token_ttl": seconds,
//    "users": {"alice": {"password", "roles": [...], "institution", "name", "email",
//                        "eduperson_entitlement": [...]}},
//    "clients": [oidc-provider client metadata, plus "roles"/"institution" for a
//                service account (client credentials)]}
// Access tokens for the SPE audience are JWTs carrying the claims the SPE reads (`roles`,
// `institution`), as a Keycloak realm with a roles mapper issues them. Users sign in on a
// plain form (/interaction/:uid); a first-party client's consent is given with the login.
import fs from 'node:fs';
import https from 'node:https';

import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const serviceAccounts = Object.fromEntries(cfg.clients.map((c) => [c.client_id, c]));
const SCOPE = 'spe';
// The resource indicator (RFC 8707) of the SPE's API; its tokens' `aud` is cfg.audience.
const RESOURCE = 'urn:spe:api';

function speClaims(entity) {
  const claims = {};
  if (entity.roles) claims.roles = entity.roles;
  if (entity.institution) claims.institution = entity.institution;
  // A research login's group memberships (AARC-G002), in place of roles.
  if (entity.eduperson_entitlement) claims.eduperson_entitlement = entity.eduperson_entitlement;
  return claims;
}

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map(({ roles, institution, ...metadata }) => metadata),
  jwks: { keys: cfg.keys },
  // EC keys only (as the SPE's demo issuer): ID tokens are ES256 too.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  cookies: { keys: ['spe-test-oidc-provider-cookie-key'] },
  async findAccount(_ctx, id) {
    const user = cfg.users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: user.name || id, email: user.email, ...speClaims(user) };
      },
    };
  },
  claims: {
    openid: ['sub'], profile: ['name'], email: ['email'], [SCOPE]: ['roles', 'institution', 'eduperson_entitlement'],
  },
  scopes: ['openid', 'profile', 'email', SCOPE],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resource) {
        if (resource !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: SCOPE,
          audience: cfg.audience,
          accessTokenTTL: cfg.access_token_ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256', kid: cfg.keys[0].kid } },
        };
      },
    },
  },
  async extraTokenClaims(_ctx, token) {
    if (token.accountId) return speClaims(cfg.users[token.accountId] || {});
    // A client credentials token: the service account's own roles.
    return speClaims(serviceAccounts[token.clientId] || {});
  },
  ttl: {
    AccessToken: cfg.access_token_ttl,
    ClientCredentials: cfg.access_token_ttl,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// One line per request on stderr (the test's provider.log): a test counts the key fetches.
provider.use(async (ctx, next) => {
  process.stderr.write(`${ctx.method} ${ctx.path}\n`);
  await next();
});

// The realm's login page: a form, checked against the users' passwords.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (!match[2] && ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = `<form method="post" action="/interaction/${escape(match[1])}/login">`
      + '<input name="login"><input name="password" type="password">'
      + `<button>Sign in to ${escape(details.params.client_id)}</button></form>`;
    return undefined;
  }
  if (match[2] && ctx.method === 'POST') {
    const form = await readForm(ctx.req);
    const login = form.get('login');
    const user = cfg.users[login];
    if (!user || user.password !== form.get('password')) {
      ctx.status = 401;
      ctx.body = 'invalid login or password';
      return undefined;
    }
    const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
    grant.addOIDCScope(`openid profile email ${SCOPE}`);
    grant.addResourceScope(RESOURCE, SCOPE);
    const grantId = await grant.save();
    const redirectTo = await provider.interactionResult(ctx.req, ctx.res, {
      login: { accountId: login },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(redirectTo);
    return undefined;
  }
  ctx.status = 405;
  return undefined;
});

const server = https.createServer({
  cert: fs.readFileSync(cfg.tls.cert),
  key: fs.readFileSync(cfg.tls.key),
}, provider.callback());
server.listen(cfg.port, '127.0.0.1', () => {
  // The test waits for this line before it calls.
  process.stdout.write(`listening on ${cfg.issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
