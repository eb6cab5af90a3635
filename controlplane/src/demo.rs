//! `warden demo`: the seed's whole scenario on loopback with embedded defaults — the
//! authorization server, the Enterprise Ledger upstream, and the gateway delegating
//! every call with a 5-second token for its one scope.

use std::net::SocketAddr;
use std::sync::Arc;

use dataplane::clock::Clock;

use crate::authz::{self, AuthServer, AuthServerConfig};
use crate::config::Config;
use crate::gateway::{Running, StartOptions, start_with};
use crate::sts::{SigningAlg, Sts};

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub gateway: SocketAddr,
    pub auth_server: SocketAddr,
    pub admin: SocketAddr,
    /// The ledger listens on an ephemeral loopback port unless set.
    pub ledger: SocketAddr,
    pub shards: Option<usize>,
    /// Where audit records go (JSON Lines, hash-chained).
    pub audit_dir: std::path::PathBuf,
    /// Durable state (signing keys, clients, refresh tokens, sessions). None: SQLite in
    /// memory (library callers, tests); `warden demo` passes `sqlite:<--data-dir>/warden.db`.
    pub state: Option<crate::state::StateConfig>,
    /// The clock of the gateway, the STS, the authorization server, and of the ledger's and
    /// the directory's token checks (tests pass a mock).
    pub clock: Clock,
    /// A candidate `.cedar` file watched in shadow: `policy.shadow` is the live rules plus it.
    pub shadow_policy: Option<std::path::PathBuf>,
    /// Upstream OpenID Connect IdPs added to the authorization server (federated login).
    pub connectors: Vec<authz::settings::ConnectorConfig>,
    /// Tests only: a CA for Client ID Metadata Documents, whose hosts may then be loopback.
    pub cimd_test_ca: Option<std::path::PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            gateway: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth_server: SocketAddr::from(([127, 0, 0, 1], 9000)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            ledger: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: None,
            audit_dir: std::env::temp_dir().join("warden-demo-audit"),
            state: None,
            clock: Clock::new(),
            shadow_policy: None,
            connectors: Vec::new(),
            cimd_test_ca: None,
        }
    }
}

/// The gateway's client id: `act.sub` of every delegation token (as in the seed).
pub const GATEWAY_CLIENT_ID: &str = "ai-identity-gateway";
/// The ledger's audience (as in the seed).
pub const LEDGER_AUDIENCE: &str = "https://enterprise-ledger.orchestrator.lab/";
/// The demo users: (username, password, groups).
pub const USERS: [(&str, &str, &[&str]); 2] = [
    (
        "john.mcclane@orchestrator.lab",
        "yippiekayay",
        &["employees"],
    ),
    (
        "sarah.connor@orchestrator.lab",
        "judgmentday",
        &["employees", "compliance"],
    ),
];
/// The ledger's tools and the scope each delegation token carries (the seed's scopes).
pub const LEDGER_TOOLS: [(&str, &str); 6] = [
    ("listAccounts", "ledger:ListAccounts"),
    ("getAccount", "ledger:GetAccount"),
    ("getTransactions", "ledger:ListTransactions"),
    ("updateAccountStatus", "ledger:UpdateAccount"),
    ("getCustomerPII", "ledger:ReadPII"),
    ("getAuditLog", "ledger:ReadAudit"),
];

/// Everything the demo runs; dropping it stops the ledger and the authorization server.
#[derive(Debug)]
pub struct Demo {
    pub gateway: Running,
    pub auth_server: AuthServer,
    pub ledger: demo::ledger::Ledger,
    pub directory: demo::directory::Directory,
    pub issuer: String,
    pub mcp_url: String,
    pub audit_dir: std::path::PathBuf,
}

/// Why the demo could not start, by the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A listen address is taken or not bindable (the operator's `--listen` options).
    #[error("{what} {addr}: {source}")]
    Port {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state: {0}")]
    State(#[from] crate::state::StateError),
    #[error("token service: {0}")]
    Sts(#[from] crate::sts::StsError),
    #[error("{0}")]
    AuthServer(#[from] authz::AuthServerError),
    /// The demo's own embedded configuration does not load (a defect of this build).
    #[error("demo configuration: {0}")]
    Config(String),
    /// The Enterprise Ledger or the directory (the demo's upstreams) did not start.
    #[error("demo upstream: {0}")]
    Peer(String),
    #[error("{0}")]
    Gateway(#[from] crate::gateway::StartError),
}

fn auth_server_yaml(
    issuer: &str,
    listen: SocketAddr,
    mcp_url: &str,
) -> Result<String, authz::AuthServerError> {
    let mut users = String::new();
    for (name, password, groups) in USERS {
        let hash = authz::hash_password(password)?;
        users.push_str(&format!("  - username: {name}\n    email: {name}\n    password_hash: '{hash}'\n    groups: [{}]\n", groups.join(", ")));
    }
    Ok(format!(
        r#"listen: {listen}
issuer: {issuer}
access_token_ttl: 1h
resources: [{mcp_url}]
dynamic_registration: true
users:
{users}scopes:
  - name: mcp:tools
  - name: pii:read
    groups: [compliance]
  - name: audit:read
    groups: [compliance]
clients:
  - client_id: mcp-client-cli
    public: true
    redirect_uris:
      - http://localhost:19876/callback
      - http://127.0.0.1:19876/callback
      - http://localhost:3334/oauth/callback
    grant_types: [authorization_code, refresh_token]
  - client_id: loadtest
    public: true
    grant_types: [password, refresh_token]
"#
    ))
}

/// The seed's OPA/Rego policy as Warden rules: the items of `policy.rules` (4-space indent).
const SEED_RULES: &str = r#"    - tools: [enterprise_ledger_getCustomerPII]
      require_scopes: [pii:read]
      reason: "Access denied: PII access requires pii:read scope."
    - tools: [enterprise_ledger_getAuditLog]
      require_scopes: [audit:read]
      reason: "Insufficient privileges: audit log access requires audit:read scope."
"#;

fn gateway_yaml(
    opts: &DemoOptions,
    issuer: &str,
    mcp_url: &str,
    ledger_url: &str,
    directory_api: &str,
) -> String {
    let mut tools = String::new();
    for (name, scope) in LEDGER_TOOLS {
        tools.push_str(&format!("        - name: {name}\n          ttl: 5s\n          scopes:\n            - name: {scope}\n"));
    }
    let mut dir_tools = String::new();
    for (name, scope) in demo::directory::OPERATION_SCOPES {
        dir_tools.push_str(&format!(
            "        - name: {name}\n          ttl: 5s\n          scopes: [{scope}]\n"
        ));
    }
    let spec: String = demo::directory::OPENAPI_YAML
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    let directory = format!(
        "  - name: employee-directory\n    kind: openapi\n    url: {directory_api}\n    namespace: employee_directory_\n    exclude: [health]\n    token_exchange:\n      type: delegation\n      audience: {aud}\n      tools:\n{dir_tools}    spec: |\n{spec}",
        aud = demo::directory::DEFAULT_AUDIENCE
    );
    format!(
        r#"audit:
  sink: file
  dir: {audit}
# The seed's OPA/Rego policy, as Warden rules (translated to Cedar; `warden policy show`).
policy:
  default: allow
  rules:
{rules}{shadow}gateway:
  listen: {gw}
  public_url: {mcp_url}
  scopes_supported: [mcp:tools, pii:read, audit:read]
  allowed_origins: [http://localhost:6274, http://127.0.0.1:6274]
  legacy_sse_transport: true
admin:
  listen: {admin}
issuers:
  - issuer: {issuer}
delegation:
  client_id: {GATEWAY_CLIENT_ID}
  mode: embedded
  issuer: {issuer}
upstreams:
  - name: enterprise-ledger
    url: {ledger_url}
    namespace: enterprise_ledger_
    token_exchange:
      type: delegation
      idp: warden
      audience: {LEDGER_AUDIENCE}
      tools:
{tools}{directory}"#,
        rules = SEED_RULES,
        shadow = match &opts.shadow_policy {
            Some(f) => format!(
                "  shadow:\n    default: allow\n    files: [{f:?}]\n    rules:\n{}",
                SEED_RULES
                    .lines()
                    .map(|l| format!("  {l}\n"))
                    .collect::<String>(),
                f = f.display().to_string()
            ),
            None => String::new(),
        },
        gw = opts.gateway,
        admin = opts.admin,
        audit = opts.audit_dir.display(),
    )
}

/// The demo's gateway configuration and authorization server as `warden demo` would run them
/// on its default addresses, without starting anything (for `warden policy test` and
/// `explain` with no configuration).
pub fn offline_config() -> Result<(Config, AuthServerConfig), DemoError> {
    let opts = DemoOptions::default();
    let issuer = format!("http://{}", opts.auth_server);
    let mcp_url = format!("http://{}/mcp", opts.gateway);
    let as_yaml = auth_server_yaml(&issuer, opts.auth_server, &mcp_url)?;
    let as_cfg: AuthServerConfig = serde_yaml_ng::from_str(&as_yaml)
        .map_err(|e| DemoError::Config(format!("authorization server: {e}")))?;
    let yaml = gateway_yaml(
        &opts,
        &issuer,
        &mcp_url,
        "http://127.0.0.1:8081/mcp",
        &format!("http://127.0.0.1:8082{}", demo::directory::API_PREFIX),
    );
    let cfg =
        Config::parse(&yaml, "(warden demo)").map_err(|e| DemoError::Config(e.to_string()))?;
    Ok((cfg, as_cfg))
}

/// Start the whole demo on the current tokio runtime.
pub async fn start(opts: DemoOptions) -> Result<Demo, DemoError> {
    // Bind the authorization server's port first: its issuer URL must name the real port.
    let port = |what, addr| move |source| DemoError::Port { what, addr, source };
    let as_probe = std::net::TcpListener::bind(opts.auth_server)
        .map_err(port("authorization server", opts.auth_server))?;
    let as_addr =
        (as_probe.local_addr()).map_err(port("authorization server", opts.auth_server))?;
    drop(as_probe);
    let gw_probe =
        std::net::TcpListener::bind(opts.gateway).map_err(port("gateway", opts.gateway))?;
    let gw_addr = (gw_probe.local_addr()).map_err(port("gateway", opts.gateway))?;
    drop(gw_probe);
    let issuer = format!("http://{as_addr}");
    let mcp_url = format!("http://{gw_addr}/mcp");

    let state = crate::state::StateStore::from_config(
        &opts.state.clone().unwrap_or_default(),
        "memory",
        opts.clock.clone(),
    )
    .await?;
    let sts = Arc::new(Sts::open(state, &issuer, SigningAlg::EdDSA).await?);
    let as_yaml = auth_server_yaml(&issuer, as_addr, &mcp_url)?;
    let mut as_cfg: AuthServerConfig = serde_yaml_ng::from_str(&as_yaml)
        .map_err(|e| DemoError::Config(format!("authorization server: {e}")))?;
    as_cfg.connectors.extend(opts.connectors.iter().cloned());
    if let Some(ca) = &opts.cimd_test_ca {
        as_cfg.client_id_metadata_documents.ca_file = Some(ca.clone());
        as_cfg.client_id_metadata_documents.allow_private_addresses = true;
    }
    let auth_server = authz::start(as_cfg, sts.clone()).await?;

    // The peers judge token expiry by the demo's clock (one clock in the process).
    let now = {
        let clock = opts.clock.clone();
        demo::Now::from_fn(move || clock.unix_secs().max(0) as u64)
    };
    let ledger = demo::ledger::Ledger::start_on(
        demo::ledger::LedgerOptions {
            listen: opts.ledger,
            jwks_uri: format!("{issuer}/jwks"),
            issuer: issuer.clone(),
            audience: LEDGER_AUDIENCE.into(),
            gateway_client_id: GATEWAY_CLIENT_ID.into(),
        },
        now.clone(),
    )
    .map_err(DemoError::Peer)?;

    let mut gw_opts = opts.clone();
    gw_opts.gateway = gw_addr;
    let directory = demo::directory::Directory::start_on(
        demo::directory::DirectoryOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwks_uri: format!("{issuer}/jwks"),
            issuer: issuer.clone(),
            audience: demo::directory::DEFAULT_AUDIENCE.into(),
            gateway_client_id: GATEWAY_CLIENT_ID.into(),
        },
        now,
    )
    .map_err(DemoError::Peer)?;
    let directory_api = format!("{}{}", directory.url(), demo::directory::API_PREFIX);
    let yaml = gateway_yaml(&gw_opts, &issuer, &mcp_url, &ledger.url(), &directory_api);
    let cfg =
        Config::parse(&yaml, "(warden demo)").map_err(|e| DemoError::Config(e.to_string()))?;
    let start = StartOptions {
        shards: opts.shards,
        sts: Some(sts),
        clock: opts.clock.clone(),
        ..StartOptions::default()
    };
    let gateway = start_with(cfg, start).await?;
    Ok(Demo {
        gateway,
        auth_server,
        ledger,
        directory,
        issuer,
        mcp_url,
        audit_dir: opts.audit_dir.clone(),
    })
}

/// What to print once the demo is ready.
pub fn banner(d: &Demo) -> String {
    let mcp = &d.mcp_url;
    let port = d.gateway.addr.port();
    format!(
        r#"
Warden demo is running.
  MCP endpoint            {mcp}
  authorization server    {issuer}   (users: john.mcclane@orchestrator.lab / yippiekayay,
                                      sarah.connor@orchestrator.lab / judgmentday — compliance)
  Enterprise Ledger       {ledger}   (MCP, behind the gateway; every call gets a 5 s delegation token)
  Employee Directory      {directory}/api/v1   (REST + OpenAPI, bridged as employee_directory_* tools)
  admin                   http://{admin}/metrics  /healthz  /readyz  /live
  audit trail             {audit}   (warden audit tail -f {audit}; warden audit verify {audit})

Claude Code:
  claude mcp add --transport http --client-id mcp-client-cli --callback-port 19876 warden {mcp}

Claude Desktop (claude_desktop_config.json):
  {{"mcpServers": {{"warden": {{"command": "npx", "args": ["mcp-remote", "{mcp}", "3334",
    "--transport", "http-only", "--static-oauth-client-info", "{{\"client_id\":\"mcp-client-cli\"}}"]}}}}}}

A test token (the `loadtest` client may use the password grant):
  curl -s {issuer}/token -d grant_type=password -d client_id=loadtest \
       -d username=john.mcclane@orchestrator.lab -d password=yippiekayay \
       -d scope=mcp:tools -d resource={mcp}

Then: curl -si http://127.0.0.1:{port}/mcp -H "authorization: Bearer $TOKEN" ... (see README).
"#,
        issuer = d.issuer,
        ledger = d.ledger.url(),
        directory = d.directory.url(),
        admin = d.gateway.admin_addr,
        audit = d.audit_dir.display(),
    )
}
