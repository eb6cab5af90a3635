//! The SQLite backend: one connection owned by a dedicated thread; async callers send it closures.
//!
//! Why a thread and not `spawn_blocking` per call: a SQLite connection is not `Sync`, one
//! connection serialises writes anyway, and a thread that owns it needs no lock. Several
//! processes may share one file (WAL, `BEGIN IMMEDIATE`, a busy timeout).

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::migrations::{LATEST, SQLITE};
use super::{Kind, RawKey, RefreshRow, StateError};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct Sqlite {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Sqlite {
    /// Open `path` (None: in memory), migrate, and start the connection's thread.
    pub async fn open(path: Option<PathBuf>) -> Result<Sqlite, StateError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("warden-sqlite".into())
            .spawn(move || {
                let mut conn = match connect(path.as_ref()) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when every sender (every StateStore clone) is dropped.
                for job in rx {
                    job(&mut conn);
                }
            })
            .map_err(|e| StateError::Db(format!("cannot start the SQLite thread: {e}")))?;
        ready_rx.await.map_err(|_| StateError::Closed)??;
        Ok(Sqlite { tx })
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |c| {
                let _ = otx.send(f(c));
            }))
            .map_err(|_| StateError::Closed)?;
        orx.await.map_err(|_| StateError::Closed)?
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        self.call(|c| Ok(c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?))
            .await
    }

    pub async fn force_schema_version(&self, v: i64) -> Result<(), StateError> {
        self.call(move |c| {
            c.execute("UPDATE schema_version SET version = ?1", params![v])?;
            Ok(())
        })
        .await
    }

    pub async fn purge_expired(&self, now: i64) -> Result<u64, StateError> {
        self.call(move |c| {
            let t = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            for table in [
                "records",
                "refresh_tokens",
                "revoked_families",
                "session_revocations",
            ] {
                n += t.execute(
                    &format!("DELETE FROM {table} WHERE expires_at <= ?1"),
                    params![now],
                )? as u64;
            }
            t.commit()?;
            Ok(n)
        })
        .await
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
        self.call(move |c| {
            let t = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let k = kind.as_str();
            let count = |t: &rusqlite::Transaction<'_>| -> rusqlite::Result<i64> {
                t.query_row("SELECT COUNT(*) FROM records WHERE kind = ?1", params![k], |r| r.get(0))
            };
            let mut n = count(&t)?;
            if n >= cap / 2 {
                t.execute(
                    "DELETE FROM records WHERE kind = ?1 AND expires_at <= ?2",
                    params![k, now],
                )?;
                n = count(&t)?;
            }
            if n >= cap {
                return Err(kind.full());
            }
            // A live row with this key wins; an expired one is replaced.
            let inserted = t.execute(
                "INSERT INTO records (kind, key, value, counter, expires_at) VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, counter = 0, expires_at = excluded.expires_at
                 WHERE records.expires_at <= ?5",
                params![k, key, value, expires_at, now],
            )?;
            t.commit()?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Insert a marker row unless a live one exists; no cap (the purge task bounds it).
    pub async fn first_use(
        &self,
        kind: Kind,
        key: String,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StateError> {
        self.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO records (kind, key, value, counter, expires_at) VALUES (?1, ?2, '', 0, ?3)
                 ON CONFLICT (kind, key) DO UPDATE SET counter = 0, expires_at = excluded.expires_at
                 WHERE records.expires_at <= ?4",
                params![kind.as_str(), key, expires_at, now],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    pub async fn get_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<(String, i64)>, StateError> {
        self.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT value, counter FROM records WHERE kind = ?1 AND key = ?2 AND expires_at > ?3",
            )?
            .query_row(params![kind.as_str(), key, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    pub async fn update_record(
        &self,
        kind: Kind,
        key: String,
        value: String,
        now: i64,
    ) -> Result<bool, StateError> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE records SET value = ?3 WHERE kind = ?1 AND key = ?2 AND expires_at > ?4",
                params![kind.as_str(), key, value, now],
            )? == 1)
        })
        .await
    }

    pub async fn bump_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<i64>, StateError> {
        self.call(move |c| {
            Ok(c.query_row(
                "UPDATE records SET counter = counter + 1 WHERE kind = ?1 AND key = ?2 AND expires_at > ?3 RETURNING counter",
                params![kind.as_str(), key, now],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    pub async fn take_record(
        &self,
        kind: Kind,
        key: String,
        now: i64,
    ) -> Result<Option<String>, StateError> {
        self.call(move |c| {
            let row: Option<(String, i64)> = c
                .query_row(
                    "DELETE FROM records WHERE kind = ?1 AND key = ?2 RETURNING value, expires_at",
                    params![kind.as_str(), key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(row.filter(|(_, exp)| *exp > now).map(|(v, _)| v))
        })
        .await
    }

    pub async fn count_records(&self, kind: Kind, now: i64) -> Result<i64, StateError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM records WHERE kind = ?1 AND expires_at > ?2",
                params![kind.as_str(), now],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub async fn insert_refresh(
        &self,
        hash: String,
        family: String,
        value: String,
        expires_at: i64,
    ) -> Result<(), StateError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO refresh_tokens (token_hash, family, value, used, expires_at) VALUES (?1, ?2, ?3, 0, ?4)",
                params![hash, family, value, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn get_refresh(&self, hash: String) -> Result<Option<RefreshRow>, StateError> {
        self.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT r.family, r.value, r.used, r.expires_at, f.family IS NOT NULL
                 FROM refresh_tokens r LEFT JOIN revoked_families f ON f.family = r.family
                 WHERE r.token_hash = ?1",
            )?
            .query_row(params![hash], |r| {
                Ok(RefreshRow {
                    family: r.get(0)?,
                    value: r.get(1)?,
                    used: r.get::<_, i64>(2)? != 0,
                    expires_at: r.get(3)?,
                    family_revoked: r.get(4)?,
                })
            })
            .optional()?)
        })
        .await
    }

    pub async fn spend_refresh(&self, hash: String) -> Result<bool, StateError> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1 AND used = 0",
                params![hash],
            )? == 1)
        })
        .await
    }

    pub async fn revoke_family(&self, family: String, expires_at: i64) -> Result<(), StateError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO revoked_families (family, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (family) DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
                params![family, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn family_revoked(&self, family: String) -> Result<bool, StateError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM revoked_families WHERE family = ?1)",
                params![family],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub async fn revoke_session(
        &self,
        id_hash: [u8; 32],
        expires_at: i64,
    ) -> Result<(), StateError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO session_revocations (id_hash, expires_at) VALUES (?1, ?2) ON CONFLICT (id_hash) DO NOTHING",
                params![id_hash.as_slice(), expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn session_revocations_since(
        &self,
        cursor: i64,
    ) -> Result<(Vec<([u8; 32], i64)>, i64), StateError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, id_hash, expires_at FROM session_revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut out = Vec::new();
            let mut next = cursor;
            let rows = st.query_map(params![cursor, super::REVOCATION_BATCH as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?))
            })?;
            for row in rows {
                let (seq, h, exp) = row?;
                next = next.max(seq);
                if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                    out.push((h, exp));
                }
            }
            Ok((out, next))
        })
        .await
    }

    pub async fn load_keys(&self) -> Result<Vec<RawKey>, StateError> {
        self.call(|c| {
            let mut st = c.prepare_cached(
                "SELECT generation, kid, alg, created_at, enc, material FROM signing_keys ORDER BY generation DESC LIMIT 2",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RawKey {
                    generation: r.get(0)?,
                    kid: r.get(1)?,
                    alg: r.get(2)?,
                    created_at: r.get(3)?,
                    enc: r.get(4)?,
                    material: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn insert_key(&self, k: RawKey) -> Result<bool, StateError> {
        self.call(move |c| {
            let t = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = t.execute(
                "INSERT INTO signing_keys (generation, kid, alg, created_at, enc, material) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (generation) DO NOTHING",
                params![k.generation, k.kid, k.alg, k.created_at, k.enc, k.material],
            )?;
            if n == 1 {
                // Retired keys (older than the previous one) are deleted with their private material.
                t.execute("DELETE FROM signing_keys WHERE generation < ?1", params![k.generation - 1])?;
            }
            t.commit()?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn reseal_key(&self, generation: i64, material: Vec<u8>) -> Result<(), StateError> {
        self.call(move |c| {
            c.execute(
                "UPDATE signing_keys SET enc = 'aes256gcm', material = ?2 WHERE generation = ?1 AND enc = 'none'",
                params![generation, material],
            )?;
            // The WAL still holds the plaintext page: copy it into the file and empty the WAL.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

fn connect(path: Option<&PathBuf>) -> Result<Connection, StateError> {
    let mut c = match path {
        None => Connection::open_in_memory()?,
        Some(p) => Connection::open(p)
            .map_err(|e| StateError::Db(format!("cannot open {}: {e}", p.display())))?,
    };
    c.busy_timeout(Duration::from_secs(5))?;
    // Deleted and overwritten rows (retired or resealed keys, spent codes) are zeroed in the
    // file rather than left in free pages.
    c.pragma_update(None, "secure_delete", "ON")?;
    if path.is_some() {
        // WAL: readers never wait for the writer; NORMAL sync survives a process crash
        // (a power loss may lose the last transactions, not corrupt the file).
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
    }
    migrate(&mut c)?;
    Ok(c)
}

fn migrate(c: &mut Connection) -> Result<(), StateError> {
    let t = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    t.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let v: Option<i64> = t
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    let v = match v {
        Some(v) => v,
        None => {
            t.execute("INSERT INTO schema_version (version) VALUES (0)", [])?;
            0
        }
    };
    if v > LATEST {
        return Err(StateError::SchemaTooNew {
            found: v,
            supported: LATEST,
        });
    }
    for (i, sql) in SQLITE.iter().enumerate().skip(v as usize) {
        t.execute_batch(sql)
            .map_err(|e| StateError::Db(format!("migration {}: {e}", i + 1)))?;
    }
    if v < LATEST {
        t.execute("UPDATE schema_version SET version = ?1", params![LATEST])?;
        tracing::info!(from = v, to = LATEST, "State: SQLite schema migrated");
    }
    t.commit()?;
    Ok(())
}
