//! Versioned schema migrations, one list per backend (same tables, each dialect's types).
//!
//! Migration `n` brings the schema from version `n - 1` to `n`. They run in one transaction at
//! start; a database whose `schema_version` is above the last one here is refused.

/// SQLite: BLOB, INTEGER booleans, AUTOINCREMENT for the revocation sequence.
pub const SQLITE: &[&str] = &[r#"
CREATE TABLE signing_keys (
    generation  INTEGER PRIMARY KEY,
    kid         TEXT    NOT NULL UNIQUE,
    alg         TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    enc         TEXT    NOT NULL,
    material    BLOB    NOT NULL
);
CREATE TABLE records (
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    counter     INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_expiry ON records (expires_at);
CREATE TABLE refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    family      TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX refresh_expiry ON refresh_tokens (expires_at);
CREATE TABLE revoked_families (
    family      TEXT    PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE session_revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id_hash     BLOB    NOT NULL UNIQUE,
    expires_at  INTEGER NOT NULL
);
"#];

/// PostgreSQL: BYTEA, BOOLEAN, BIGSERIAL.
pub const POSTGRES: &[&str] = &[r#"
CREATE TABLE signing_keys (
    generation  BIGINT  PRIMARY KEY,
    kid         TEXT    NOT NULL UNIQUE,
    alg         TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    enc         TEXT    NOT NULL,
    material    BYTEA   NOT NULL
);
CREATE TABLE records (
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    counter     BIGINT  NOT NULL DEFAULT 0,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_expiry ON records (expires_at);
CREATE TABLE refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    family      TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX refresh_expiry ON refresh_tokens (expires_at);
CREATE TABLE revoked_families (
    family      TEXT    PRIMARY KEY,
    expires_at  BIGINT  NOT NULL
);
CREATE TABLE session_revocations (
    seq         BIGSERIAL PRIMARY KEY,
    id_hash     BYTEA   NOT NULL UNIQUE,
    expires_at  BIGINT  NOT NULL
);
"#];

/// The schema version this binary writes and understands.
pub const LATEST: i64 = SQLITE.len() as i64;

const _: () = assert!(SQLITE.len() == POSTGRES.len());
