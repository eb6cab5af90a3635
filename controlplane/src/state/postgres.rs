//! The PostgreSQL backend (several replicas on one database): a small deadpool connection pool.
//!
//! Why a pool and not one connection: the authorization server's handlers run concurrently
//! and a single connection would queue them behind each other's round trips; the pool also
//! replaces a connection that broke (database restart, failover) on the next checkout, since
//! each checkout is verified first. Single use across replicas comes from the statements
//! themselves (`UPDATE … WHERE used = false`, `DELETE … RETURNING`, `ON CONFLICT`), not from
//! anything held in a process.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::migrations::{LATEST, POSTGRES};
use super::{Kind, RawKey, RefreshRow, StateError};

/// Advisory lock key serialising migrations of replicas that start together ("warden").
const MIGRATION_LOCK: i64 = 0x7761_7264_656e;

pub struct Pg {
    pool: Pool,
}

fn pool_err(e: impl std::fmt::Display) -> StateError {
    StateError::Db(format!("PostgreSQL: {e}"))
}

impl Pg {
    pub async fn open(url: &str) -> Result<Pg, StateError> {
        let cfg: tokio_postgres::Config = url.parse().map_err(|e| {
            StateError::Config(format!("state.url: not a valid PostgreSQL URL: {e}"))
        })?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(pool_err)?;
        let pg = Pg { pool };
        pg.migrate().await?;
        Ok(pg)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let mut c = self.conn().await?;
        let t = c.transaction().await?;
        t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        t.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let v: i64 = match t
            .query_opt("SELECT version FROM schema_version", &[])
            .await?
        {
            Some(r) => r.get(0),
            None => {
                t.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        if v > LATEST {
            return Err(StateError::SchemaTooNew {
                found: v,
                supported: LATEST,
            });
        }
        for (i, sql) in POSTGRES.iter().enumerate().skip(v as usize) {
            t.batch_execute(sql)
                .await
                .map_err(|e| StateError::Db(format!("migration {}: {e}", i + 1)))?;
        }
        if v < LATEST {
            t.execute("UPDATE schema_version SET version = $1", &[&LATEST])
                .await?;
            tracing::info!(from = v, to = LATEST, "State: PostgreSQL schema migrated");
        }
        t.commit().await?;
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        let c = self.conn().await?;
        Ok(c.query_one("SELECT version FROM schema_version", &[])
            .await?
            .get(0))
    }

    pub async fn force_schema_version(&self, v: i64) -> Result<(), StateError> {
        let c = self.conn().await?;
        c.execute("UPDATE schema_version SET version = $1", &[&v])
            .await?;
        Ok(())
    }

    pub async fn purge_expired(&self, now: i64) -> Result<u64, StateError> {
        let c = self.conn().await?;
        let mut n = 0;
        for table in [
            "records",
            "refresh_tokens",
            "revoked_families",
            "session_revocations",
        ] {
            n += c
                .execute(
                    &format!("DELETE FROM {table} WHERE expires_at <= $1"),
                    &[&now],
                )
                .await?;
        }
        Ok(n)
    }

    pub async fn insert_record(
        &self,
        kind: Kind,
        key: String,
        value: String,
        expires_at: i64,
        cap: i64,
        now: i64,
    ) -> Result<bool, StateError> {
        let c = self.conn().await?;
        let k = kind.as_str();
        // The cap is approximate across replicas (two may pass the count at once): it bounds
        // growth, it is not an exact quota.
        let mut n: i64 = c
            .query_one("SELECT COUNT(*) FROM records WHERE kind = $1", &[&k])
            .await?
            .get(0);
        if n >= cap / 2 {
            c.execute(
                "DELETE FROM records WHERE kind = $1 AND expires_at <= $2",
                &[&k, &now],
            )
            .await?;
            n = c
                .query_one("SELECT COUNT(*) FROM records WHERE kind = $1", &[&k])
                .await?
                .get(0);
        }
        if n >= cap {
            return Err(kind.full());
        }
        let inserted = c
            .execute(
                "INSERT INTO records (kind, key, value, counter, expires_at) VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, counter = 0, expires_at = excluded.expires_at
                 WHERE records.expires_at <= $5",
                &[&k, &key, &value, &expires_at, &now],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Insert a marker row unless a live one exists, in one statement: of several replicas
    /// inserting the same key at once, exactly one gets `true`. No cap (the purge task bounds it).
    pub async fn first_use(
        &self,
        kind: Kind,
        key: String,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StateError> {
        let c = self.conn().await?;
        let inserted = c
            .execute(
                "INSERT INTO records (kind, key, value, counter, expires_at) VALUES ($1, $2, '', 0, $3)
                 ON CONFLICT (kind, key) DO UPDATE SET counter = 0, expires_at = excluded.expires_at
                 WHERE records.expires_at <= $4",
                &[&kind.as_str(), &key, &expires_at, &now],
            )
            .await?;
        Ok(inserted == 1)
    }

    pub async fn get_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<(String, i64)>, StateError> {
        let c = self.conn().await?;
        let r = c
            .query_opt(
                "SELECT value, counter FROM records WHERE kind = $1 AND key = $2 AND expires_at > $3",
                &[&kind.as_str(), &key, &now],
            )
            .await?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    pub async fn update_record(
        &self,
        kind: Kind,
        key: String,
        value: String,
        now: i64,
    ) -> Result<bool, StateError> {
        let c = self.conn().await?;
        Ok(c.execute(
            "UPDATE records SET value = $3 WHERE kind = $1 AND key = $2 AND expires_at > $4",
            &[&kind.as_str(), &key, &value, &now],
        )
        .await?
            == 1)
    }

    pub async fn bump_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<i64>, StateError> {
        let c = self.conn().await?;
        let r = c
            .query_opt(
                "UPDATE records SET counter = counter + 1 WHERE kind = $1 AND key = $2 AND expires_at > $3 RETURNING counter",
                &[&kind.as_str(), &key, &now],
            )
            .await?;
        Ok(r.map(|r| r.get(0)))
    }

    pub async fn take_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<String>, StateError> {
        let c = self.conn().await?;
        let r = c
            .query_opt(
                "DELETE FROM records WHERE kind = $1 AND key = $2 RETURNING value, expires_at",
                &[&kind.as_str(), &key],
            )
            .await?;
        Ok(r.filter(|r| r.get::<_, i64>(1) > now).map(|r| r.get(0)))
    }

    pub async fn count_records(&self, kind: Kind, now: i64) -> Result<i64, StateError> {
        let c = self.conn().await?;
        Ok(c.query_one(
            "SELECT COUNT(*) FROM records WHERE kind = $1 AND expires_at > $2",
            &[&kind.as_str(), &now],
        )
        .await?
        .get(0))
    }

    pub async fn insert_refresh(
        &self,
        hash: String,
        family: String,
        value: String,
        expires_at: i64,
    ) -> Result<(), StateError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO refresh_tokens (token_hash, family, value, used, expires_at) VALUES ($1, $2, $3, FALSE, $4)",
            &[&hash, &family, &value, &expires_at],
        )
        .await?;
        Ok(())
    }

    pub async fn get_refresh(&self, hash: String) -> Result<Option<RefreshRow>, StateError> {
        let c = self.conn().await?;
        let r = c
            .query_opt(
                "SELECT r.family, r.value, r.used, r.expires_at, f.family IS NOT NULL
                 FROM refresh_tokens r LEFT JOIN revoked_families f ON f.family = r.family
                 WHERE r.token_hash = $1",
                &[&hash],
            )
            .await?;
        Ok(r.map(|r| RefreshRow {
            family: r.get(0),
            value: r.get(1),
            used: r.get(2),
            expires_at: r.get(3),
            family_revoked: r.get(4),
        }))
    }

    pub async fn spend_refresh(&self, hash: String) -> Result<bool, StateError> {
        let c = self.conn().await?;
        Ok(c.execute(
            "UPDATE refresh_tokens SET used = TRUE WHERE token_hash = $1 AND used = FALSE",
            &[&hash],
        )
        .await?
            == 1)
    }

    pub async fn revoke_family(&self, family: String, expires_at: i64) -> Result<(), StateError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO revoked_families (family, expires_at) VALUES ($1, $2)
             ON CONFLICT (family) DO UPDATE SET expires_at = GREATEST(revoked_families.expires_at, excluded.expires_at)",
            &[&family, &expires_at],
        )
        .await?;
        Ok(())
    }

    pub async fn family_revoked(&self, family: String) -> Result<bool, StateError> {
        let c = self.conn().await?;
        Ok(c.query_one(
            "SELECT EXISTS (SELECT 1 FROM revoked_families WHERE family = $1)",
            &[&family],
        )
        .await?
        .get(0))
    }

    pub async fn revoke_session(
        &self,
        id_hash: [u8; 32],
        expires_at: i64,
    ) -> Result<(), StateError> {
        let mut c = self.conn().await?;
        let t = c.transaction().await?;
        // Writers take turns so sequence numbers commit in order: a reader's cursor never
        // skips a number that a slower transaction commits later. Readers are not blocked.
        t.batch_execute("LOCK TABLE session_revocations IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        t.execute(
            "INSERT INTO session_revocations (id_hash, expires_at) VALUES ($1, $2) ON CONFLICT (id_hash) DO NOTHING",
            &[&id_hash.as_slice(), &expires_at],
        )
        .await?;
        t.commit().await?;
        Ok(())
    }

    pub async fn session_revocations_since(
        &self,
        cursor: i64,
    ) -> Result<(Vec<([u8; 32], i64)>, i64), StateError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, id_hash, expires_at FROM session_revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&cursor, &(super::REVOCATION_BATCH as i64)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut next = cursor;
        for r in rows {
            next = next.max(r.get::<_, i64>(0));
            let h: Vec<u8> = r.get(1);
            if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                out.push((h, r.get(2)));
            }
        }
        Ok((out, next))
    }

    pub async fn load_keys(&self) -> Result<Vec<RawKey>, StateError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT generation, kid, alg, created_at, enc, material FROM signing_keys ORDER BY generation DESC LIMIT 2",
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| RawKey {
                generation: r.get(0),
                kid: r.get(1),
                alg: r.get(2),
                created_at: r.get(3),
                enc: r.get(4),
                material: r.get(5),
            })
            .collect())
    }

    pub async fn insert_key(&self, k: RawKey) -> Result<bool, StateError> {
        let mut c = self.conn().await?;
        let t = c.transaction().await?;
        // Two replicas rotating at once both try generation N+1: the primary key lets one win.
        let n = t
            .execute(
                "INSERT INTO signing_keys (generation, kid, alg, created_at, enc, material) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (generation) DO NOTHING",
                &[&k.generation, &k.kid, &k.alg, &k.created_at, &k.enc, &k.material],
            )
            .await?;
        if n == 1 {
            t.execute(
                "DELETE FROM signing_keys WHERE generation < $1",
                &[&(k.generation - 1)],
            )
            .await?;
        }
        t.commit().await?;
        Ok(n == 1)
    }

    pub async fn reseal_key(&self, generation: i64, material: Vec<u8>) -> Result<(), StateError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE signing_keys SET enc = 'aes256gcm', material = $2 WHERE generation = $1 AND enc = 'none'",
            &[&generation, &material],
        )
        .await?;
        Ok(())
    }
}
